"""The restore job: one disk of one backup to a target."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.restore import DeviceTarget, FileTarget, RestoreTarget, restore_disk
from ..engine.staging import StagingLedger
from ..errors import UsageError
from .context import JobContext

log = logging.getLogger(__name__)


def parse_target(spec: str, fmt: str | None, force: bool, workdir: str | Path | None = None) -> RestoreTarget:
    """`file:PATH` (a new or regular file, written under PATH.partial) or `device:PATH` (a block device,
    written in place, only with --force): a device is overwritten only when the user named it as one."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("file", "device") or not rest:
        raise UsageError(f"unknown restore target {spec!r}", "use --to file:PATH or --to device:/dev/NAME")
    if kind == "device":
        try:
            is_device = stat.S_ISBLK(os.stat(rest).st_mode)
        except OSError as exc:
            raise UsageError(f"restore target {rest}: {exc.strerror}", "name an existing block device") from None
        if not is_device:
            raise UsageError(f"restore target {rest} is not a block device", f"restore to a file with --to file:{rest}")
        if fmt == "qcow2":
            raise UsageError("a device is restored raw", "drop --format qcow2")
        if not force:
            raise UsageError(f"restore target {rest} is a device: restoring overwrites all of it",
                             "pass --force to overwrite it")
        return DeviceTarget(rest)
    staging = StagingLedger(workdir) if workdir is not None else None
    return FileTarget(rest, fmt or ("qcow2" if rest.endswith(".qcow2") else "raw"), overwrite=force, staging=staging)


def restore(ctx: JobContext, ref: str, target: RestoreTarget, disk: str | None = None,
            progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict:
    repo = ctx.repo
    job_id = ctx.start_reading_job("restore")
    try:
        with ctx.lock("read", f"restore {ref}") as lock:
            backup_id = repo.resolve(ref)
            record = repo.get_backup(backup_id)
            d = record.disk(disk)
            index = repo.get_index(d)
            log.info("restore %s: disk %s (%d bytes) to %s", backup_id, d.name, d.size, getattr(target, "path", ""))
            cb = progress(d.name, d.size) if progress else None
            stats = restore_disk(repo, index, target, workers=ctx.settings.workers, progress=cb)
        report: dict[str, Any] = {"backup_id": backup_id, "disk": d.name, "size": d.size,
                                  "target": getattr(target, "path", ""), "bytes_written": stats.bytes_written,
                                  "duration_s": round(stats.duration_s, 3),
                                  "status": "warning" if lock.warning else "success"}
        if lock.warning:
            report["warnings"] = [lock.warning]
        ctx.finish_reading_job(job_id, report["status"], backup_id=backup_id, report=report)
        return report
    except BaseException as exc:
        ctx.finish_reading_job(job_id, "failed", str(exc) or exc.__class__.__name__)
        raise
