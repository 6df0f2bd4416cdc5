"""The verify job: are all backup records, block indexes and chunks the backups need present and
intact (chunks re-hashed with --deep)? Does the repository still hold every backup the proxy knows?

Each damaged object is named and the rest is still checked; a damaged chunk is set aside
(`Repository.load_block`) so that the next Full backup stores it again.

A sampled deep verify (`sample=(part, parts)`) re-hashes only the chunks whose digest falls in share
`part` of `parts`: a scheduling policy passes its run number, so that `parts` runs read every chunk
once (as kopia's percentage and borg's --max-duration spread a full read over several runs); the
others are still checked for presence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..engine.blockindex import BlockIndex
from ..engine.repository import DAMAGED_SUFFIX, Repository
from ..engine.window import map_bounded
from ..errors import CorruptChunkError, DamagedRecordError, StackvaultError
from . import trust
from .context import JobContext
from .maintenance import missing_backups

MISSING = "missing from the repository"


@dataclass
class VerifyResult:
    #: Chunks in pack files (format 4) are never set aside: a pack is not rewritten in place.
    packed: bool = False
    backups_checked: int = 0
    chunks_checked: int = 0
    bad_chunks: dict[str, str] = field(default_factory=dict)
    affected: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    bad_indexes: list[dict] = field(default_factory=list)
    bad_records: list[dict] = field(default_factory=list)
    bad_key_slots: list[dict] = field(default_factory=list)
    missing_backups: list[str] = field(default_factory=list)
    unchecked_records: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sample: tuple[int, int] | None = None  # (part, parts) of the chunks re-hashed; None: all of them
    chunks_read: int = 0

    @property
    def ok(self) -> bool:
        return not (self.bad_chunks or self.bad_indexes or self.bad_records or self.bad_key_slots
                    or self.missing_backups)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "backups_checked": self.backups_checked,
            "chunks_checked": self.chunks_checked,
            "chunks_read": self.chunks_read,
            **({"sample": f"{self.sample[0] + 1}/{self.sample[1]}"} if self.sample else {}),
            "bad_chunks": [{"chunk": c, "problem": p, "backups": sorted(self.affected[c])}
                           for c, p in sorted(self.bad_chunks.items())],
            "bad_indexes": self.bad_indexes,
            "bad_records": self.bad_records,
            "bad_key_slots": self.bad_key_slots,
            "missing_backups": self.missing_backups,
            "unchecked_records": self.unchecked_records,
            "set_aside": [] if self.packed else sorted(c + DAMAGED_SUFFIX for c, p in self.bad_chunks.items()
                                                       if p != MISSING),
            "warnings": self.warnings,
            "status": "failed" if not self.ok else "warning" if self.warnings else "success",
        }


def sample_part(digest: bytes, parts: int) -> int:
    """Which of `parts` shares a chunk is in: its digest is uniform, so each share holds 1/parts."""
    return int.from_bytes(digest[:8], "big") % parts


def verify(ctx: JobContext, ref: str | None = None, deep: bool = False,
           progress: Callable[[str, int], Callable[[int], None]] | None = None,
           sample: tuple[int, int] | None = None) -> VerifyResult:
    """The check, recorded as a `verify` job (when the catalog can be written) so that monitoring knows
    when the repository was last checked and how much damage was found (observe.metrics)."""
    job_id = ctx.start_reading_job("verify")
    try:
        result = _check(ctx, ref, deep, progress, sample)
    except BaseException as exc:
        ctx.finish_reading_job(job_id, "failed", str(exc) or exc.__class__.__name__)
        raise
    damaged = sum(map(len, (result.bad_chunks, result.bad_indexes, result.bad_records, result.bad_key_slots,
                            result.missing_backups)))
    ctx.finish_reading_job(job_id, result.to_dict()["status"], report={
        "whole_repository": ref is None, "deep": deep, "sample": sample, "damaged": damaged,
        "backups_checked": result.backups_checked, "chunks_checked": result.chunks_checked})
    return result


def _check(ctx: JobContext, ref: str | None, deep: bool,
           progress: Callable[[str, int], Callable[[int], None]] | None,
           sample: tuple[int, int] | None) -> VerifyResult:
    repo = ctx.repo
    result = VerifyResult(sample=sample if deep else None, packed=repo.packed)
    with ctx.lock("read", "verify") as lock:
        if lock.warning:
            result.warnings.append(lock.warning)
        all_ids = repo.backup_ids()
        ids = [repo.resolve(ref)] if ref else all_ids
        if not ref:
            result.missing_backups = missing_backups(ctx, all_ids)
            warning = trust.rollback(ctx, repo, all_ids)
            if warning:
                result.warnings.append(warning)
            if repo.encrypted:
                result.bad_key_slots = [{"key": k, "problem": e.problem} for k, e in repo.damaged_key_slots().items()]
        needed: dict[bytes, int] = {}
        for _, index in _indexes(repo, ids, result):
            for i, digest in index.data_blocks():
                needed.setdefault(digest, index.block_length(i))
        result.chunks_checked = len(needed)
        if deep and sample is not None:
            for digest in repo.missing_chunks(needed):
                result.bad_chunks[digest.hex()] = MISSING
            needed = {d: n for d, n in needed.items() if sample_part(d, sample[1]) == sample[0] and
                      d.hex() not in result.bad_chunks}
        if deep and repo.packed:  # a pack read whole: its name, its header, then each chunk below
            for digest, in_pack in repo.chunks_in_damaged_packs(needed).items():
                result.bad_chunks[digest.hex()] = in_pack
            needed = {d: n for d, n in needed.items() if d.hex() not in result.bad_chunks}
        if deep:
            result.chunks_read = len(needed)
            cb = progress("verify", sum(needed.values())) if progress else None

            def check(item: tuple[bytes, int]) -> tuple[bytes, str | None]:
                digest, length = item
                try:
                    repo.load_block(digest, length)
                    return digest, None
                except CorruptChunkError as exc:  # a damaged one is now set aside (load_block)
                    return digest, exc.problem
                finally:
                    if cb:
                        cb(length)

            workers = ctx.settings.workers
            with ThreadPoolExecutor(workers) as pool:
                for digest, problem in map_bounded(pool, check, needed.items(), 4 * workers):
                    if problem:
                        result.bad_chunks[digest.hex()] = problem
        else:
            for digest in repo.missing_chunks(needed):
                result.bad_chunks[digest.hex()] = MISSING
        result.warnings += [f"chunk index {key} is damaged ({why}): `stackvault gc` rebuilds it from the packs"
                            for key, why in repo.damaged_chunk_indexes.items()]
        if result.bad_chunks:
            _name_affected(repo, ids, result)
    return result


def _indexes(repo: Repository, ids: list[str], result: VerifyResult | None) -> Iterator[tuple[str, BlockIndex]]:
    """Every readable block index of the backups `ids`; unreadable ones are recorded in `result`."""
    for backup_id in ids:
        try:
            record = repo.get_backup(backup_id)
        except DamagedRecordError as exc:
            if result is not None:
                result.bad_records.append({"backup": backup_id, "problem": exc.problem})
            continue
        if result is not None:
            result.backups_checked += 1
            if not record.checked and not repo.encrypted:
                result.unchecked_records.append(backup_id)
        for disk in record.disks:
            try:
                yield backup_id, repo.get_index(disk)
            except StackvaultError as exc:
                if result is not None:
                    result.bad_indexes.append({"backup": backup_id, "disk": disk.name, "problem": exc.message})


def _name_affected(repo: Repository, ids: list[str], result: VerifyResult) -> None:
    """Which backups use each bad chunk: a second pass over the indexes, made only when something is bad,
    so that a clean verify of millions of chunks does not keep a set of backups for every one of them."""
    bad = {bytes.fromhex(h): h for h in result.bad_chunks}
    for backup_id, index in _indexes(repo, ids, None):
        for _, digest in index.data_blocks():
            if digest in bad:
                result.affected[bad[digest]].add(backup_id)
