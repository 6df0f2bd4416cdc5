"""Backing up one disk: read blocks, hash them, store the chunks the level asks for, build the index.

Hashing, zero detection, compression and storing run on a thread pool (BLAKE3, zstd and file writes
release the GIL). Reading runs there too when the source allows reads at any offset from several
threads (a raw file or block device: a queue of reads is what makes a disk fast), and otherwise on the
calling thread, in order (a download, an NBD export).
At most `inflight` blocks are in memory at once, so memory depends on the block size and the number
of workers. What grows with the disk are flat arrays only: the new block index (32 bytes a block, 64 MiB
for a TiB of 512 KiB blocks), the previous one for an Incremental or Differential, and a byte a block
saying where data is; never a Python object per block.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from .bitmap import ChangeBitmap
from .blockindex import ZERO_DIGEST, BlockIndex, block_count
from .changed import KEEP, ZERO, ReadPlan
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
        self._listed = ListedChunks(repo) if level == "full" and repo.backend.parallel_calls > 1 else None
        self._zero = bytes(self.block_size)

    def run(self) -> tuple[BlockIndex, ChangeBitmap]:
        started = time.monotonic()
        size, bs = self.source.size, self.block_size
        n = block_count(size, bs)
        index = BlockIndex.empty(size, bs, self.backup_id)
        prev = self.base.previous if self.level != "full" else None
        old_bits = self.base.bitmap if self.level == "differential" else None
        changed = ChangeBitmap.empty(size, bs)
        self.stats.blocks_total = n

        if self.plan is not None:
            todo = self.plan.blocks
            self.stats.bytes_read += self.plan.bytes_read
        else:
            todo = bytearray(n)  # ZERO, or READ where data may be
            for off, length in self.source.data_extents():
                if length > 0:
                    todo[off // bs : (off + length - 1) // bs + 1] = (
                        b"\x01" * ((off + length - 1) // bs + 1 - off // bs))

        def record(i: int, digest: bytes) -> bool:
            """Store the digest; True when the level wants this block's chunk stored."""
            index.set_digest(i, digest)
            if digest == ZERO_DIGEST:
                self.stats.blocks_zero += 1
            differs = self.base.previous is None or self.base.previous.digest(i) != digest
            if differs:
                changed.set(i)
            if digest == ZERO_DIGEST:
                return False
            if self.level == "full":
                return True
            if self.level == "incremental":
                return prev is None or prev.digest(i) != digest
            return differs or (old_bits is not None and old_bits[i])

        def work(i: int, data: bytes) -> None:
            digest = ZERO_DIGEST if data == self._zero[: len(data)] else self.repo.hash_block(data)
            with self._lock:
                wanted = record(i, digest)
                if wanted:
                    wanted = self._claimed.add(digest)
            if wanted:
                self._store(digest, data)

        def read_and_work(i: int, length: int) -> None:
            work(i, self.source.read(i * bs, length))

        parallel = self.source.parallel_reads
        threads = max(self.workers, PARALLEL_READS) if parallel else self.workers
        inflight = threading.BoundedSemaphore(max(4, min(threads * 3, (256 << 20) // bs)))
        futures: set[Future] = set()

        def done(fut: Future) -> None:
            inflight.release()

        with ThreadPoolExecutor(threads, thread_name_prefix="sv-block") as pool:
            try:
                for i in range(n):
                    if todo[i] == ZERO or todo[i] == KEEP:
                        with self._lock:
                            record(i, ZERO_DIGEST if todo[i] == ZERO else self.plan.keep.digest(i))  # type: ignore[union-attr]  # KEEP needs a plan
                        self._report(index.block_length(i))
                        continue
                    length = index.block_length(i)
                    inflight.acquire()
                    if parallel:
                        fut = pool.submit(read_and_work, i, length)
                    else:
                        fut = pool.submit(work, i, self.source.read(i * bs, length))
                    self.stats.bytes_read += length
                    fut.add_done_callback(done)
                    futures.add(fut)
                    if len(futures) > 64:
                        finished, futures = wait(futures, timeout=0)
                        for f in finished:
                            f.result()
                    self._report(length)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in finished:
                f.result()
            for f in futures:
                f.result()
        self.source.finish()

        if self.level == "differential":
            self.stats.blocks_changed = _union_count(changed, old_bits)
        else:
            self.stats.blocks_changed = changed.count()
        bitmap = self._next_bitmap(changed, size, bs)
        self.stats.duration_s = time.monotonic() - started
        return index, bitmap

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
        if self.level == "full":
            return ChangeBitmap.empty(size, bs, self.backup_id, self.backup_id)
        old = self.base.bitmap
        bits = bytearray(changed.bits)
        if self.base.previous is not None and self.base.previous.disk_size != size:
            # A resized disk: its blocks no longer line up with the Full's, so all count as changed
            # (a later Differential stores them all, as after a pruned Full).
            bits[:] = b"\xff" * len(bits)
        elif old is not None and len(old.bits) == len(bits):
            bits = bytearray((int.from_bytes(bits, "little") | int.from_bytes(old.bits, "little"))
                             .to_bytes(len(bits), "little"))
        return ChangeBitmap(bs, size, self.base.full_backup_id or self.backup_id, self.backup_id, bits)


def _union_count(changed: ChangeBitmap, old: ChangeBitmap | None) -> int:
    value = int.from_bytes(changed.bits, "little")
    if old is not None and len(old.bits) == len(changed.bits):
        value |= int.from_bytes(old.bits, "little")
    return value.bit_count()
