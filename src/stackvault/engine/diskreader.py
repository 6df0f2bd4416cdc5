"""Random access to one disk of one backup, read from the repository on demand.

A restore walks every block once; an NBD client or a mounted raw file asks for a few KiB here and
there, mostly the same metadata blocks again and again, and sometimes streams. So reads go through a
bounded cache of whole blocks (least recently used out first: memory stays at `cache_bytes` whatever
the disk's size), ranges the block index knows as zeros are answered without touching the
repository, and a read of the block after the previous one starts fetching the next few blocks on a
small thread pool (read-ahead), so a sequential reader waits on one block at a time at most.

Every block is fetched through `Repository.load_block`, which checks it against its BLAKE3 id and
decrypts it: the reader works the same on every repository kind and never hands out a damaged byte.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from .blockindex import ZERO_DIGEST, BlockIndex
from .repository import Repository

#: The default cache: 64 MiB holds a file system's hot metadata and a read-ahead window.
DEFAULT_CACHE_BYTES = 64 << 20
#: Blocks fetched ahead of a sequential reader.
DEFAULT_READ_AHEAD = 4


@functools.lru_cache(maxsize=8)
def _zeros(length: int) -> bytes:
    """A read wholly inside a hole, one buffer shared between reads: a sequential read of a sparse disk
    (a mounted image, an NBD client) is mostly holes, asked for in a few request sizes, and building
    each one block by block cost more than the FUSE round trip that asked for it."""
    return bytes(length)


class DiskReader:
    """Thread-safe reads of byte ranges of one backed-up disk."""

    def __init__(self, repo: Repository, index: BlockIndex, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 read_ahead: int = DEFAULT_READ_AHEAD) -> None:
        self.repo = repo
        self.index = index
        self.size = index.disk_size
        bs = index.block_size
        # At least the read-ahead window and the block being read fit, whatever the setting says.
        self._capacity = max(cache_bytes // bs, read_ahead + 2)
        self._read_ahead = read_ahead
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._pending: dict[int, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._last_block = -2
        self._pool = ThreadPoolExecutor(max(1, read_ahead), thread_name_prefix="sv-read")
        self.fetched = 0  # blocks loaded from the repository (what the cache and holes saved shows)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def is_hole(self, offset: int, length: int) -> bool:
        """Whether [offset, offset+length) reads as zeros by the index alone."""
        bs = self.index.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        return next(iter(self.index.data_blocks(first, last + 1)), None) is None

    def data_from(self, offset: int) -> int | None:
        """SEEK_DATA: the first offset at or after `offset` outside the holes the index knows; None
        when only holes follow. Block-granular, as the index is."""
        bs = self.index.block_size
        for i, _digest in self.index.data_blocks(offset // bs):
            return max(offset, i * bs)
        return None

    def hole_from(self, offset: int) -> int:
        """SEEK_HOLE: the first offset at or after `offset` in a hole (the disk's end counts as one)."""
        bs = self.index.block_size
        return max(offset, min(self.index.data_end(offset // bs) * bs, self.size))

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (clipped at the disk's end)."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        bs = self.index.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        if self.is_hole(offset, length):
            self._ahead(first, last)  # a sequential reader crossing a hole still has the data after it fetched
            return _zeros(length)
        out = bytearray()
        for i in range(first, last + 1):
            out += self._block(i)
        self._ahead(first, last)
        start = offset - first * bs
        return bytes(out[start : start + length])

    def _ahead(self, first: int, last: int) -> None:
        """Sequential reading (this read starts at or just after the previous one's block): fetch the
        next blocks in the background."""
        with self._lock:
            sequential = first in (self._last_block, self._last_block + 1)
            self._last_block = last
        if not sequential:
            return
        for i in range(last + 1, min(last + 1 + self._read_ahead, self.index.blocks)):
            if self.index.digest(i) != ZERO_DIGEST:  # zeros are made when read, never fetched
                self._future(i)

    def _block(self, i: int) -> bytes:
        digest = self.index.digest(i)
        if digest == ZERO_DIGEST:
            return bytes(self.index.block_length(i))
        with self._lock:
            data = self._cache.get(i)
            if data is not None:
                self._cache.move_to_end(i)
                return data
        return self._future(i).result()

    def _future(self, i: int) -> Future[bytes]:
        """The fetch of block i: the one under way, or a new one (a cached or zero block: done at once)."""
        with self._lock:
            fut = self._pending.get(i)
            if fut is not None:
                return fut
            if i in self._cache:
                done: Future[bytes] = Future()
                done.set_result(self._cache[i])
                return done
            digest = self.index.digest(i)
            if digest == ZERO_DIGEST:
                done = Future()
                done.set_result(bytes(self.index.block_length(i)))
                return done
            fut = self._pool.submit(self._load, i, digest)
            self._pending[i] = fut
            return fut

    def _load(self, i: int, digest: bytes) -> bytes:
        try:
            data = self.repo.load_block(digest, self.index.block_length(i))
        except BaseException:
            with self._lock:
                self._pending.pop(i, None)
            raise
        with self._lock:  # cached before it stops being pending: no second fetch of it can start
            self._pending.pop(i, None)
            self.fetched += 1
            self._cache[i] = data
            self._cache.move_to_end(i)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return data
