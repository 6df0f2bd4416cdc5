"""Backing up one disk: read blocks, hash them, store the chunks the level asks for, build the index.

Hashing, zero detection, compression and storing run on a thread pool (BLAKE3, zstd and file writes
release the GIL). Reading runs there too when the source allows reads at any offset from several
threads (a raw file or block device: a queue of reads is what makes a disk fast), and otherwise on the
calling thread, in order (a download, an NBD export).
At most `inflight` blocks are in memory at once, so memory depends on the block size and the number
of workers. The disk is walked by runs of blocks (where the source has data, what a change list says),
never block by block through its holes: what grows is the block indexes (32 bytes a block that holds
data, the new one and the previous one), the change bitmap and the list of the source's extents, all
flat arrays following the data, not the disk's provisioned size; never a Python object per block.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .bitmap import ChangeBitmap
from .blockindex import ZERO_DIGEST, BlockIndex, IndexBuilder, block_count, differing_blocks
from .changed import KEEP, READ, ZERO, ReadPlan, Run
from .chunks import encode_chunk
from .presence import ListedChunks
from .repository import Repository
from .sources import DiskSource
from .state import DiskBase

LEVELS = ("full", "incremental", "differential")


@dataclass
class DiskStats:
    bytes_read: int = 0
    bytes_stored: int = 0
    bytes_stored_plain: int = 0
    blocks_total: int = 0
    blocks_changed: int = 0
    blocks_zero: int = 0
    blocks_new_chunks: int = 0
    duration_s: float = 0.0


Progress = Callable[[int], None]

#: Threads reading a source that allows parallel reads: queue depth 4 read the bench image as fast as 8.
PARALLEL_READS = 4

#: How many blocks may wait, read and hashed, for an earlier one: the index is built in disk order.
ORDER_WINDOW = 1024

#: How many of a run's chunk ids it remembers having stored (about 100 bytes each): enough for the
#: duplicates a disk holds near each other, without a set that grows with the disk.
CLAIMED_MAX = 16384


class RecentDigests:
    """The last `capacity` digests added, so a run stores a chunk once without remembering every block.

    A Full of a 2 TiB disk would otherwise keep four million digests (some 400 MiB). Forgetting one is
    harmless: its next block asks the repository (or the Full's listing, which learns every chunk the
    run stores) as any block does. A Differential, which asks nobody, writes a chunk repeated farther
    apart than the window again: identical bytes replace identical bytes."""

    def __init__(self, capacity: int) -> None:
        self._seen: set[bytes] = set()
        self._order: deque[bytes] = deque()
        self._capacity = capacity

    def add(self, digest: bytes) -> bool:
        """True when `digest` was not among the recent ones (and now is)."""
        if digest in self._seen:
            return False
        self._seen.add(digest)
        self._order.append(digest)
        if len(self._order) > self._capacity:
            self._seen.discard(self._order.popleft())
        return True


class DiskBackup:
    """One disk's pass at one level. `run()` returns the new index and change bitmap.

    Without a `plan` every block that may hold data is read. With one (engine/changed.py: the source
    listed what changed since an earlier backup), only its READ blocks are; its KEEP blocks take the
    earlier backup's digest, whose chunk that backup already references, so they are never stored.
    """

    def __init__(self, repo: Repository, source: DiskSource, level: str, base: DiskBase, backup_id: str,
                 *, workers: int = 2, progress: Progress | None = None, plan: ReadPlan | None = None) -> None:
        assert level in LEVELS
        assert plan is None or level != "full", "a Full reads every block"
        self.plan = plan
        self.repo = repo
        self.source = source
        self.level = level
        self.base = base
        self.backup_id = backup_id
        self.workers = max(1, workers)
        self.progress = progress
        self.block_size = repo.config.block_size
        self.stats = DiskStats()
        self._lock = threading.Lock()
        self._claimed = RecentDigests(CLAIMED_MAX)  # chunks this run stored or decided not to store
        # On an object store (slow calls, many at once) a Full learns what exists by listing.
        # A packed repository answers from its chunk index, in memory: nothing to list.
        self._listed = (ListedChunks(repo) if level == "full" and repo.backend.parallel_calls > 1 and not repo.packed
                        else None)
        self._zero = bytes(self.block_size)

    def run(self) -> tuple[BlockIndex, ChangeBitmap]:
        started = time.monotonic()
        size, bs = self.source.size, self.block_size
        n = block_count(size, bs)
        self._index = IndexBuilder(size, bs, self.backup_id)
        self._changed = ChangeBitmap.empty(size, bs)
        self.stats.blocks_total = n
        if self.plan is not None:
            runs = self.plan.runs
            self.stats.bytes_read += self.plan.bytes_read
        else:
            runs = extent_runs(self.source.data_extents(), bs, n)

        def work(i: int, data: bytes) -> tuple[bytes, bool]:
            digest = ZERO_DIGEST if data == self._zero[: len(data)] else self.repo.hash_block(data)
            differs = self.base.previous is None or self.base.previous.digest(i) != digest
            wanted = self._wanted(i, digest, differs)
            if wanted:
                with self._lock:
                    wanted = self._claimed.add(digest)
            if wanted:
                self._store(digest, data)
            return digest, differs

        def read_and_work(i: int, length: int) -> tuple[bytes, bool]:
            return work(i, self.source.read(i * bs, length))

        parallel = self.source.parallel_reads
        threads = max(self.workers, PARALLEL_READS) if parallel else self.workers
        inflight = threading.BoundedSemaphore(max(4, min(threads * 3, (256 << 20) // bs)))
        # Blocks and runs in disk order; a block's digest is recorded once every earlier one is.
        pending: deque[tuple[int, int, int, Future | None]] = deque()

        def done(fut: Future) -> None:
            inflight.release()

        with ThreadPoolExecutor(threads, thread_name_prefix="sv-block") as pool:
            try:
                for start, end, action in runs:
                    if action != READ:
                        pending.append((start, end, action, None))
                        continue
                    for i in range(start, end):
                        length = self._length(i)
                        inflight.acquire()
                        if parallel:
                            fut = pool.submit(read_and_work, i, length)
                        else:
                            fut = pool.submit(work, i, self.source.read(i * bs, length))
                        self.stats.bytes_read += length
                        fut.add_done_callback(done)
                        pending.append((i, i + 1, READ, fut))
                        self._settle(pending, ORDER_WINDOW)
                self._settle(pending, 0)
            except BaseException:
                for *_, queued in pending:
                    if queued is not None:
                        queued.cancel()
                raise
        self.source.finish()

        old_bits = self.base.bitmap if self.level == "differential" else None
        if old_bits is not None and old_bits.blocks == n and old_bits.block_size == bs:
            self.stats.blocks_changed = self._changed.union(old_bits).count()
        else:
            self.stats.blocks_changed = self._changed.count()
        index = self._index.finish()
        bitmap = self._next_bitmap(self._changed, size, bs)
        self.stats.duration_s = time.monotonic() - started
        return index, bitmap

    def _length(self, i: int) -> int:
        return min(self.block_size, self.source.size - i * self.block_size)

    def _wanted(self, i: int, digest: bytes, differs: bool) -> bool:
        """Whether the level stores this block's chunk (unless this run already did)."""
        if digest == ZERO_DIGEST:
            return False
        if self.level == "full":
            return True
        if self.level == "incremental":
            return differs
        return differs or (self.base.bitmap is not None and self.base.bitmap[i])

    def _settle(self, pending: deque, keep: int) -> None:
        """Record what is done at the head of `pending`, waiting for the head while more than `keep` wait."""
        while pending:
            start, end, action, fut = pending[0]
            if fut is not None and not fut.done() and len(pending) <= keep:
                return
            pending.popleft()
            if fut is not None:
                digest, differs = fut.result()
                self._index.add(start, digest)
                self.stats.blocks_zero += digest == ZERO_DIGEST
                if differs:
                    self._changed.set(start)
            elif action == ZERO:
                self.stats.blocks_zero += end - start
                if self.base.previous is not None:  # blocks that held data and no longer do
                    for i, _ in self.base.previous.data_blocks(start, end):
                        self._changed.set(i)
            else:
                assert action == KEEP and self.plan is not None
                kept = self._index.add_from(self.plan.keep, start, end)
                self.stats.blocks_zero += end - start - kept
                if self.base.previous is not None and self.base.previous is not self.plan.keep:
                    for i in differing_blocks(self.base.previous, self.plan.keep, start, end):
                        self._changed.set(i)
            self._report(min(end * self.block_size, self.source.size) - start * self.block_size)

    def _store(self, digest: bytes, data: bytes) -> None:
        # Full makes sure every chunk exists, trusting nothing; Incremental trusts the repository's
        # copy of a chunk it shares with other disks; Differential writes its blocks again, so that it
        # depends on nothing but the Full and itself.
        if self.level != "differential" and (self._listed.has(digest) if self._listed else self.repo.has_chunk(digest)):
            return
        blob = encode_chunk(data, self.repo.config.compression_level)
        self.repo.put_chunk(digest, blob)
        if self._listed is not None:
            self._listed.note(digest)
        with self._lock:
            self.stats.bytes_stored += len(blob)
            self.stats.bytes_stored_plain += len(data)
            self.stats.blocks_new_chunks += 1

    def _report(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress(nbytes)

    def _next_bitmap(self, changed: ChangeBitmap, size: int, bs: int) -> ChangeBitmap:
        ids = (self.base.full_backup_id or self.backup_id, self.backup_id)
        if self.level == "full":
            return ChangeBitmap.empty(size, bs, self.backup_id, self.backup_id)
        old = self.base.bitmap
        if self.base.previous is not None and self.base.previous.disk_size != size:
            # A resized disk: its blocks no longer line up with the Full's, so all count as changed
            # (a later Differential stores them all, as after a pruned Full).
            return ChangeBitmap.every(size, bs, *ids)
        if old is not None and old.blocks == changed.blocks and old.block_size == bs:
            changed = changed.union(old)
        changed.full_backup_id, changed.backup_id = ids
        return changed


def extent_runs(extents: list[tuple[int, int]], block_size: int, blocks: int) -> list[Run]:
    """The source's data extents (sorted byte ranges) as runs covering blocks [0, blocks): READ for
    every block an extent touches, ZERO for the holes between them."""
    runs: list[Run] = []
    at = 0
    for offset, length in extents:
        if length <= 0:
            continue
        first, end = max(offset // block_size, at), min(-(-(offset + length) // block_size), blocks)
        if first >= end:
            continue
        if runs and runs[-1][2] == READ and runs[-1][1] == first:
            runs[-1] = (runs[-1][0], end, READ)
        else:
            if at < first:
                runs.append((at, first, ZERO))
            runs.append((first, end, READ))
        at = end
    if at < blocks:
        runs.append((at, blocks, ZERO))
    return runs
