"""The verify job: are all chunks the backups need present (and, with --deep, intact)?"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..engine.blockindex import BlockIndex
from ..engine.chunks import chunk_key
from ..engine.repository import Repository
from ..engine.window import map_bounded
from ..errors import CorruptChunkError, StackvaultError
from .context import JobContext


@dataclass
class VerifyResult:
    backups_checked: int = 0
    chunks_checked: int = 0
    bad_chunks: dict[str, str] = field(default_factory=dict)
    affected: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    bad_indexes: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad_chunks and not self.bad_indexes

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "backups_checked": self.backups_checked,
            "chunks_checked": self.chunks_checked,
            "bad_chunks": [{"chunk": c, "problem": p, "backups": sorted(self.affected[c])}
                           for c, p in sorted(self.bad_chunks.items())],
            "bad_indexes": self.bad_indexes,
        }


def verify(ctx: JobContext, ref: str | None = None, deep: bool = False,
           progress: Callable[[str, int], Callable[[int], None]] | None = None) -> VerifyResult:
    repo = ctx.repo
    result = VerifyResult()
    with ctx.lock("read", "verify"):
        ids = [repo.resolve(ref)] if ref else repo.backup_ids()
        needed: dict[bytes, int] = {}
        for _, index in _indexes(repo, ids, result):
            for i, digest in index.data_blocks():
                needed.setdefault(digest, index.block_length(i))
        result.chunks_checked = len(needed)
        if deep:
            cb = progress("verify", sum(needed.values())) if progress else None

            def check(item: tuple[bytes, int]) -> tuple[bytes, str | None]:
                digest, length = item
                try:
                    repo.load_block(digest, length)
                    return digest, None
                except CorruptChunkError as exc:
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
            present = {o.key for o in repo.backend.list("chunks/")}
            for digest in needed:
                if chunk_key(digest) not in present:
                    result.bad_chunks[digest.hex()] = "missing from the repository"
        if result.bad_chunks:
            _name_affected(repo, ids, result)
    return result


def _indexes(repo: Repository, ids: list[str], result: VerifyResult | None) -> Iterator[tuple[str, BlockIndex]]:
    """Every readable block index of the backups `ids`; unreadable ones are recorded in `result`."""
    for backup_id in ids:
        record = repo.get_backup(backup_id)
        if result is not None:
            result.backups_checked += 1
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
