"""The backup job: disks in, one committed backup out, working state and catalog advanced after."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..domain import BackupLevel
from ..engine.changed import ReadPlan, full_read, plan_changed_blocks
from ..engine.manifest import BackupRecord, DiskRecord, new_backup_id
from ..engine.pipeline import LEVELS, DiskBackup
from ..engine.repository import hostname
from ..engine.sources import DiskSource, open_source
from ..engine.state import DiskBase
from ..errors import StackvaultError, UsageError
from ..observe.targets import target
from .context import JobContext

log = logging.getLogger(__name__)

#: `read.why` of an rbd Incremental or Differential read in full because the list is turned off.
CHANGED_BLOCKS_OFF = "changed-block list turned off ([ceph] changed_blocks = false or --no-changed-blocks)"

ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class BackupRequest:
    sources: list[DiskSource]
    level: str = "incremental"
    name: str = ""
    tags: dict = field(default_factory=dict)
    source_meta: dict = field(default_factory=dict)
    consistency: str | None = None
    warnings: list[str] = field(default_factory=list)


def choose_level(requested: str, base_previous, size: int, block_size: int) -> tuple[str, str]:
    """The level a disk really gets, and why it differs from the one asked for."""
    if requested == "full":
        return "full", ""
    if base_previous is None:
        return "full", f"no earlier backup of this disk: {requested} upgraded to full"
    if base_previous.disk_size != size:
        # An Incremental compares digests block by block, whatever the sizes; a Differential counts
        # from a Full of the old geometry, so it starts a new one.
        if requested == "incremental":
            return "incremental", f"disk size changed from {base_previous.disk_size} to {size} bytes: every block read"
        return "full", f"disk size changed from {base_previous.disk_size} to {size} bytes: new full"
    if base_previous.block_size != block_size:
        return "full", f"block size changed from {base_previous.block_size} to {block_size}: new full"
    return requested, ""


def back_up(ctx: JobContext, request: BackupRequest, progress: ProgressFactory | None = None) -> BackupRecord:
    """Back up every disk of `request` into one backup; nothing is committed unless all succeed."""
    if request.level not in LEVELS:
        raise UsageError(f"unknown level {request.level!r}", f"use one of: {', '.join(LEVELS)}")
    repo = ctx.repo
    job_id = ctx.catalog.start_job("backup", repo.id)  # a cloud job opened the catalog during its snapshots
    started = time.monotonic()
    created = datetime.now(UTC)
    existing = repo.backup_ids()
    backup_id = new_backup_id(created, after=existing[-1] if existing else None)
    warnings = list(request.warnings)
    disks: list[DiskRecord] = []
    results = []
    try:
        with ctx.locked("shared", f"backup {backup_id}"):
            for position, source in enumerate(request.sources):
                base = ctx.state.base_for(source.key, source.name)
                warnings.extend(base.warnings)
                # A changed level is no fault (a first backup, a resized disk): the disk's `reason` says it.
                level, reason = choose_level(request.level, base.previous, source.size, repo.config.block_size)
                read_info: dict[str, Any]
                plan, read_info = None, dict(source.read_note)
                if source.lists_changes:
                    plan, read_info = read_plan(ctx, source, level, reason, base)
                    read_info.update({k: v for k, v in source.read_note.items() if k not in read_info})
                    if read_info["path"] == "full_read" and level != "full" and not reason:
                        reason = f"{read_info['why']}: read in full"
                    if read_info.get("sample_mismatches"):  # the listing Ceph gave was wrong: loudly
                        warnings.append(f"disk {source.name}: {reason}")
                log.info("backup %s: disk %s (%s, %d bytes): %s%s", backup_id, source.name, source.key,
                         source.size, level, f" ({reason})" if reason else "")
                cb = progress(source.name, source.size) if progress else None
                # Object stores answer each call slowly but many at once: more workers keep uploads parallel.
                workers = max(ctx.settings.workers, repo.parallel_calls)
                run = DiskBackup(repo, source, level, base, backup_id, workers=workers, progress=cb, plan=plan)
                run.stats.bytes_read += read_info.pop("sample_bytes", 0)  # a sample that disagreed
                index, bitmap = run.run()
                key, stored = repo.put_index(backup_id, position, index)
                st = run.stats
                log.info("backup %s: disk %s read %d bytes, stored %d, %d of %d blocks changed", backup_id,
                         source.name, st.bytes_read, st.bytes_stored, st.blocks_changed, st.blocks_total)
                disks.append(DiskRecord(
                    position=position, name=source.name, disk_key=source.key, size=source.size,
                    block_size=repo.config.block_size, level=level, index=key,
                    index_checksum=index.checksum().hex(),
                    full_backup_id=backup_id if level == "full" else (base.full_backup_id or backup_id),
                    base_backup_id=base.base_backup_id, format=source.format, reason=reason,
                    bytes_read=st.bytes_read, bytes_stored=st.bytes_stored, blocks_total=st.blocks_total,
                    blocks_changed=st.blocks_changed, blocks_zero=st.blocks_zero,
                    blocks_new_chunks=st.blocks_new_chunks, bytes_new_plain=st.bytes_stored_plain,
                    meta=dict(source.meta), read=read_info,
                ))
                results.append((source.key, stored, bitmap))
            levels = {d.level for d in disks}
            record = BackupRecord(
                backup_id=backup_id, created=created.isoformat(timespec="seconds"),
                finished=datetime.now(UTC).isoformat(timespec="seconds"),
                level=levels.pop() if len(levels) == 1 else "mixed", requested_level=request.level,
                status="warning" if warnings else "success", disks=disks, name=request.name,
                host=hostname(), tags=request.tags, source=request.source_meta,
                consistency=request.consistency, warnings=warnings,
                duration_s=round(time.monotonic() - started, 3), stackvault_version=__version__,
            )
            repo.commit_backup(record)
            log.info("backup %s committed: %s", backup_id, record.status)
        # The backup exists now; the state is only a cache of it, so a failure from here on is a warning.
        for disk_key, stored, bitmap in results:
            try:
                ctx.state.save(disk_key, stored, bitmap)
            except StackvaultError as exc:
                record.warnings.append(str(exc))
                record.status = "warning"
        ctx.catalog.add_backup(repo.id, record)
        ctx.catalog.finish_job(job_id, record.status, "; ".join(record.warnings), backup_id, backup_report(record))
        return record
    except BaseException as exc:
        # Which server, volume or disk failed, for the metrics of failures per target (observe.metrics).
        what = target(request.source_meta, request.name, [s.key for s in request.sources])
        ctx.catalog.finish_job(job_id, "failed", str(exc) or exc.__class__.__name__, report={"target": what.to_dict()})
        raise


def read_plan(ctx: JobContext, source: DiskSource, level: str, reason: str,
              base: DiskBase) -> tuple[ReadPlan | None, dict]:
    """For a source that lists its changes: the blocks to read, against the backup whose snapshot the
    level diffs from (the newest backup for an Incremental, the last Full for a Differential), or
    None and why the disk is read in full. Every fallback is a correct backup, never a failure."""
    if level == "full":
        return None, full_read(reason or "a Full reads every block")
    if not ctx.settings.ceph.changed_blocks:
        return None, full_read(CHANGED_BLOCKS_OFF)
    keep, meta = base.previous, base.meta
    if level == "differential" and base.full_backup_id != base.base_backup_id:
        found = ctx.repo.latest_disk(source.key, full_only=True)
        if found is None or found[0].backup_id != base.full_backup_id:
            return None, full_read(f"the last Full ({base.full_backup_id}) is no longer in the repository")
        keep, meta = ctx.repo.get_index(found[1]), found[1].meta
    plan = plan_changed_blocks(source, meta, keep,  # type: ignore[arg-type]  # not a Full: there is a previous index
                               ctx.settings.ceph.verify_sample, ctx.repo.hash_block)
    return (plan, plan.info) if isinstance(plan, ReadPlan) else (None, plan)


def back_up_files(ctx: JobContext, specs: list[str], level: BackupLevel, name: str = "", tags: dict | None = None,
                  progress: ProgressFactory | None = None) -> BackupRecord:
    if not specs:
        raise UsageError("nothing to back up", "pass --source file:PATH")
    sources: list[DiskSource] = []
    try:
        for spec in specs:
            sources.append(open_source(spec, ctx.settings.ceph))
        keys = [s.key for s in sources]
        if len(set(keys)) != len(keys):
            raise UsageError("the same source is named twice", "name each disk once")
        return back_up(ctx, BackupRequest(sources=sources, level=level, name=name, tags=tags or {},
                                          source_meta={"kind": "file"}), progress)
    finally:
        for s in sources:
            s.close()


def backup_report(record: BackupRecord) -> dict:
    """The machine-readable report (docs/cli.md): totals over disks, then each disk."""
    return {
        "backup_id": record.backup_id,
        "level": record.level,
        "requested_level": record.requested_level,
        "status": record.status,
        "consistency": record.consistency,
        "bytes_read": record.bytes_read,
        "bytes_stored": record.bytes_stored,
        "blocks_total": sum(d.blocks_total for d in record.disks),
        "blocks_changed": sum(d.blocks_changed for d in record.disks),
        "size": record.size,
        "duration_s": record.duration_s,
        "warnings": record.warnings,
        "disks": [
            {"name": d.name, "disk_key": d.disk_key, "size": d.size, "block_size": d.block_size, "level": d.level,
             "bytes_read": d.bytes_read, "bytes_stored": d.bytes_stored, "blocks_total": d.blocks_total,
             "blocks_changed": d.blocks_changed, "blocks_zero": d.blocks_zero,
             "blocks_new_chunks": d.blocks_new_chunks, "reason": d.reason, "read": d.read}
            for d in record.disks
        ],
    }
