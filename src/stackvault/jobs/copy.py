"""The copy job: backups of the repository in use copied into a second one (another store, region
or site), sending only what the second lacks, so that it is filled incrementally and stands alone.

Each backup is copied as a backup is made, in the order that keeps the second repository valid at
every instant: its chunks (made durable disk by disk, so that a killed copy resumes where it
stopped), then its block indexes, then its record, the commit point (`Repository.commit_backup`). A
copy killed before the record leaves chunks and maybe indexes that no record names: the next copy
finds the chunks and sends only the rest, and `gc` removes what is never committed.

A copied backup keeps its id, times, level, consistency, source and every other field of its record;
only its disks' index checksums change when the second repository keys its chunk ids otherwise
(engine/copying.py). Every block index is a synthetic full, so a copied backup restores without the
backups it was made relative to: a copy of an Incremental whose Full was not copied is in the second
repository what an Incremental whose Full was pruned is in the first (its next Differential stores every
block).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..engine.copying import CopyStats, DiskCopy, known_ids, same_chunk_ids
from ..engine.keys import TO_ENV, PassphraseError
from ..engine.manifest import BackupRecord, DiskRecord
from ..engine.repository import NoRepositoryError, Repository
from ..errors import StackvaultError, UsageError
from ..progress import ProgressFactory
from .context import JobContext

log = logging.getLogger(__name__)


@dataclass
class CopiedBackup:
    backup_id: str
    level: str
    created: str
    copied: bool  # False: the second repository held it already, or forgot it
    stats: CopyStats = field(default_factory=CopyStats)
    forgotten: bool = False  # a prune or forget of the second repository removed it there

    def to_dict(self) -> dict:
        result = "copied" if self.copied else "forgotten" if self.forgotten else "skipped"
        return {"backup_id": self.backup_id, "level": self.level, "created": self.created,
                "result": result, "chunks_sent": self.stats.chunks_sent,
                "bytes_sent": self.stats.bytes_sent, "chunks_held": self.stats.chunks_held}


@dataclass
class CopyReport:
    source: str
    target: str
    reencrypted: bool
    backups: list[CopiedBackup] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        total = CopyStats()
        for b in self.backups:
            total.add(b.stats)
        return {"from": self.source, "to": self.target, "reencrypted": self.reencrypted,
                "backups": [b.to_dict() for b in self.backups],
                "backups_copied": sum(b.copied for b in self.backups),
                "backups_skipped": sum(not b.copied for b in self.backups),
                "chunks_sent": total.chunks_sent, "bytes_sent": total.bytes_sent,
                "chunks_held": total.chunks_held, "chunks_read": total.chunks_read,
                "warnings": self.warnings, "status": "warning" if self.warnings else "success"}


def second_site(ctx: JobContext, location: str, passphrase_file: str | None, passphrase_option: str) -> JobContext:
    """The context of the repository at `location`, opened as the first one is (its own passphrase from
    `passphrase_file`, else STACKVAULT_TO_PASSPHRASE, else a terminal), sharing the first's catalog."""
    target = JobContext(replace(ctx.settings, repo=location), passphrase_file, passphrase_env=TO_ENV,
                        passphrase_option=passphrase_option)
    target.catalog = ctx.catalog  # one engine for one database
    return target


def open_target(target: JobContext, source: Repository) -> Repository:
    """The second repository, opened (and checked against what this proxy remembers of it) and
    refused when it cannot take the copy, before anything is written to it."""
    # The errors of opening it name the second repository's own options, not the first's.
    try:
        dst = target.repo
    except PassphraseError as exc:
        raise PassphraseError(exc.message, f"give its passphrase with {target.passphrase_option} PATH or "
                                           f"{target.passphrase_env}, or run on a terminal to be asked") from None
    except NoRepositoryError as exc:
        raise NoRepositoryError(exc.message, f"make it with `stackvault --repo {target.location} init` and the "
                                             "same --block-size, or pass the right --to") from None
    if dst.id == source.id:
        raise UsageError(f"{dst.location} is repository {dst.id}, the one copied from",
                         "pass another repository to --to")
    if dst.config.block_size != source.config.block_size:
        ours, theirs = source.config.block_size >> 10, dst.config.block_size >> 10
        raise UsageError(f"repository {dst.location} has blocks of {theirs} KiB, {source.location} of {ours} KiB: "
                         "a copy keeps the blocks it copies",
                         f"copy to a repository made with `stackvault init --block-size {ours}KiB`")
    return dst


def copy(ctx: JobContext, target: JobContext, refs: list[str] | None = None,
         only: Callable[[BackupRecord], bool] | None = None, progress: ProgressFactory | None = None) -> dict:
    """Copy the backups named by `refs` (ids, unique prefixes, `latest`; default: all) that `only`
    accepts and the second repository lacks; recorded as a `copy` job of the first repository."""
    src = ctx.repo
    dst = open_target(target, src)
    job_id = ctx.start_reading_job("copy")
    try:
        report = _copy(ctx, target, src, dst, refs or [], only, progress)
    except BaseException as exc:
        ctx.finish_reading_job(job_id, "failed", str(exc) or exc.__class__.__name__)
        raise
    result = report.to_dict()
    ctx.finish_reading_job(job_id, result["status"], "; ".join(report.warnings), report={
        k: result[k] for k in ("to", "backups_copied", "backups_skipped", "chunks_sent", "bytes_sent")})
    return result


def _copy(ctx: JobContext, target: JobContext, src: Repository, dst: Repository, refs: list[str],
          only: Callable[[BackupRecord], bool] | None, progress: ProgressFactory | None) -> CopyReport:
    report = CopyReport(src.location, dst.location, reencrypted=not same_chunk_ids(src, dst))
    with ctx.lock("read", "copy") as read_lock, target.locked("shared", f"copy from {src.location}"):
        if read_lock.warning:
            report.warnings.append(read_lock.warning)
        if src.encrypted and not dst.encrypted:  # allowed (require_encryption refuses it), never silent
            report.warnings.append(f"{src.location} is encrypted and {dst.location} is not: the copies are "
                                   "stored there unencrypted")
        for record in _selected(src, refs, only, report):
            held = set(dst.backup_ids())
            # REPO2's own retention stands: what its prune or forget removed comes back only by name
            forgotten = not refs and dst.was_forgotten(record.backup_id)
            if record.backup_id in held or forgotten:
                report.backups.append(CopiedBackup(record.backup_id, record.level, record.created, copied=False,
                                                   forgotten=forgotten and record.backup_id not in held))
                continue
            copied = CopiedBackup(record.backup_id, record.level, record.created, copied=True)
            disks = [_copy_disk(ctx, src, dst, record, disk, held, copied.stats, progress) for disk in record.disks]
            proof = src.proofs.load(record.backup_id)
            if proof is not None and (dst.encrypted <= src.encrypted):  # a plain store's proof is no proof
                dst.proofs.save(proof)  # before the record: a copy killed in between still has it next time
            dst.commit_backup(replace(record, disks=disks))  # last: the backup exists in the copy from here
            log.info("copy: backup %s committed in %s: %d chunks sent (%d bytes), %d already there",
                     record.backup_id, dst.location, copied.stats.chunks_sent, copied.stats.bytes_sent,
                     copied.stats.chunks_held)
            report.backups.append(copied)
    return report


def _selected(src: Repository, refs: list[str], only: Callable[[BackupRecord], bool] | None,
              report: CopyReport) -> list[BackupRecord]:
    """The records to copy, oldest first. A named backup whose record is damaged stops the copy; one
    met while copying everything is left out, with a warning."""
    if refs:
        records = [src.get_backup(backup_id) for backup_id in sorted({src.resolve(ref) for ref in refs})]
    else:
        records, damaged = src.scan()
        report.warnings += [f"backup {backup_id} is not copied: {exc.message}"
                            for backup_id, exc in sorted(damaged.items())]
    return [r for r in records if only is None or only(r)]


def _copy_disk(ctx: JobContext, src: Repository, dst: Repository, record: BackupRecord, disk: DiskRecord,
               held: set[str], stats: CopyStats, progress: ProgressFactory | None) -> DiskRecord:
    index = src.get_index(disk)
    known = {} if same_chunk_ids(src, dst) else _earlier_copy(src, dst, record.backup_id, disk, held)
    workers = max(ctx.settings.workers, dst.parallel_calls)
    per_disk = (lambda total: progress(disk.name, total)) if progress else None
    run = DiskCopy(src, dst, known, workers, per_disk)
    copied = run.run(index)
    stats.add(run.stats)
    dst.flush_packs()  # the chunks are stored before the index naming them, and a resumed copy finds them
    dst.put_index(record.backup_id, disk.position, copied)
    return replace(disk, index_checksum=copied.checksum().hex())


def _earlier_copy(src: Repository, dst: Repository, backup_id: str, disk: DiskRecord,
                  held: set[str]) -> dict[bytes, bytes]:
    """Chunk ids of the newest backup of the same disk that both repositories hold, older than
    `backup_id` first (the one a copied Incremental shares most chunks with): first repository's ->
    second's. Empty when there is none, or it cannot be read (its chunks are then read and rehashed)."""
    common = set(src.backup_ids()) & held
    for other_id in sorted(common, key=lambda b: (b < backup_id, b), reverse=True):
        try:
            ours, theirs = src.get_backup(other_id), dst.get_backup(other_id)
            for a in ours.disks:
                b = next((d for d in theirs.disks if d.position == a.position), None)
                if a.disk_key == disk.disk_key and b is not None:
                    return known_ids(src.get_index(a), dst.get_index(b))
        except StackvaultError:
            continue
    return {}
