"""The restore job: one disk of one backup to a target."""

from __future__ import annotations

from collections.abc import Callable

from ..engine.restore import FileTarget, RestoreTarget, restore_disk
from ..errors import UsageError
from .context import JobContext


def parse_target(spec: str, fmt: str | None, force: bool) -> RestoreTarget:
    kind, sep, rest = spec.partition(":")
    if not sep or kind != "file":
        raise UsageError(f"unknown restore target {spec!r}", "use --to file:PATH")
    return FileTarget(rest, fmt or ("qcow2" if rest.endswith(".qcow2") else "raw"), overwrite=force)


def restore(ctx: JobContext, ref: str, target: RestoreTarget, disk: str | None = None,
            progress: Callable[[str, int], Callable[[int], None]] | None = None) -> dict:
    repo = ctx.repo
    job_id = ctx.start_reading_job("restore")
    try:
        with ctx.lock("shared", f"restore {ref}"):
            backup_id = repo.resolve(ref)
            record = repo.get_backup(backup_id)
            d = record.disk(disk)
            index = repo.get_index(d)
            cb = progress(d.name, d.size) if progress else None
            stats = restore_disk(repo, index, target, workers=ctx.settings.workers, progress=cb)
        report = {"backup_id": backup_id, "disk": d.name, "size": d.size, "target": getattr(target, "path", ""),
                  "bytes_written": stats.bytes_written, "duration_s": round(stats.duration_s, 3), "status": "success"}
        ctx.finish_reading_job(job_id, "success", backup_id=backup_id, report=report)
        return report
    except BaseException as exc:
        ctx.finish_reading_job(job_id, "failed", str(exc) or exc.__class__.__name__)
        raise
