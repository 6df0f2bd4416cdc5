"""The verify job: are all chunks the backups need present (and, with --deep, intact)?"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..engine.blockindex import DIGEST_SIZE, ZERO_DIGEST
from ..engine.chunks import chunk_key
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
    with ctx.lock("shared", "verify"):
        ids = [repo.resolve(ref)] if ref else repo.backup_ids()
        needed: dict[bytes, int] = {}
        users: dict[bytes, set[str]] = defaultdict(set)
        for backup_id in ids:
            record = repo.get_backup(backup_id)
            result.backups_checked += 1
            for disk in record.disks:
                try:
                    index = repo.get_index(disk)
                except StackvaultError as exc:
                    result.bad_indexes.append({"backup": backup_id, "disk": disk.name, "problem": exc.message})
                    continue
                view = memoryview(index.digests)
                for i in range(index.blocks):
                    digest = bytes(view[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
                    if digest != ZERO_DIGEST:
                        needed.setdefault(digest, index.block_length(i))
                        users[digest].add(backup_id)
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

            with ThreadPoolExecutor(ctx.settings.workers) as pool:
                for digest, problem in pool.map(check, needed.items()):
                    if problem:
                        result.bad_chunks[digest.hex()] = problem
        else:
            present = {o.key for o in repo.backend.list("chunks/")}
            for digest in needed:
                if chunk_key(digest) not in present:
                    result.bad_chunks[digest.hex()] = "missing from the repository"
        for hexid in result.bad_chunks:
            result.affected[hexid] = users[bytes.fromhex(hexid)]
    return result
