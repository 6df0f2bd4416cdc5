"""The block index: the digest of every block of one disk in one backup, kept sparse.

The same binary format serves as a disk's manifest in the repository and as its `<disk>.sha`
working-state file, so the state is a byte-for-byte cache of the newest manifest (as Proxmox Backup
Server's fixed index). Only blocks holding data have an entry: a run of blocks that read as zeros
(never written, discarded, or written with zeros) costs nothing, so memory, the stored index and the
working state follow the data a disk holds, never its provisioned size (a 4 TiB volume holding 64 MiB
has an index of a few KiB). docs/repository-format.md is the contract of these bytes.

In memory: the runs of consecutive data blocks (first block, count, and where the run's digests
start), three flat arrays, and the data blocks' digests, 32 bytes each, in disk order. A block's
digest is found by bisecting the runs. Written as `SVFIDX02`, little endian:

    0   8  magic b"SVFIDX02"
    8   4  block size
    12  4  reserved (0)
    16  8  disk size in bytes
    24  8  number of blocks
    32 48  backup id, ASCII, NUL padded
    80  8  number of runs
    88  8  number of data blocks
    96 32  BLAKE3 of the body (the index checksum a backup record names)
    128 16 BLAKE3 of bytes 0..128, first 16 bytes (integrity of the header)
    144    one zstd frame (content size set) of the body: per run its first block and block count
           (8 bytes each), runs ascending, then the digests of the data blocks in disk order

`SVFIDX01` (32 bytes for every block, zeros for a zero block) is still read, never written.
"""

from __future__ import annotations

import re
import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator

import blake3
import zstandard

MAGIC = b"SVFIDX02"
HEADER = struct.Struct("<8sII QQ 48s QQ 32s")
HEADER_SIZE = HEADER.size + 16
#: The dense index of older versions: 32 bytes per block, read only.
MAGIC_V1 = b"SVFIDX01"
HEADER_V1 = struct.Struct("<8sII QQ 48s 32s")
HEADER_V1_SIZE = 128
DIGEST_SIZE = 32
ZERO_DIGEST = bytes(DIGEST_SIZE)
RUN_SIZE = 16
MAX_BLOCK_SIZE = 1 << 30
#: zstd level of the stored body: its runs compress, its digests (random bytes) do not.
COMPRESSION_LEVEL = 3
# 32 or more zero bytes among digests: the 32-byte entries wholly inside are zero digests.
_ZEROS = re.compile(rb"\x00{%d,}" % DIGEST_SIZE)


class IndexFormatError(ValueError):
    """The bytes are not an intact block index (truncated, bit rot, other file, forged)."""


def block_count(disk_size: int, block_size: int) -> int:
    return -(-disk_size // block_size)


def runs_to_bytes(values: array) -> bytes:
    """An array('Q') as little-endian bytes (runs as stored: first block, count)."""
    if sys.byteorder == "big":
        values = array("Q", values)
        values.byteswap()
    return values.tobytes()


def runs_from_bytes(data: bytes | memoryview) -> array:
    """Little-endian 8-byte numbers as an array('Q')."""
    values = array("Q")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def max_stored_size(disk_size: int, block_size: int) -> int:
    """The most bytes an index of this geometry can take as stored, in either format (the largest
    body: runs of single blocks and a digest for every block, plus zstd's bound on stored-raw
    frames); a larger object is refused before it is read."""
    blocks = block_count(disk_size, block_size)
    body = (blocks + 1) // 2 * RUN_SIZE + blocks * DIGEST_SIZE
    return max(HEADER_V1_SIZE + blocks * DIGEST_SIZE, HEADER_SIZE + body + (body >> 7) + 1024)


def _zero_entries(digests: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """(first, end) entry numbers of the runs of zero digests among 32-byte entries."""
    for m in _ZEROS.finditer(digests):
        first, end = -(-m.start() // DIGEST_SIZE), m.end() // DIGEST_SIZE
        if first < end:
            yield first, end


class BlockIndex:
    """One disk's digests: the runs of data blocks and their digests; every other block is zeros.

    Immutable once made (by `IndexBuilder` or `from_bytes`), so several threads may read it at once.
    """

    def __init__(self, block_size: int, disk_size: int, backup_id: str, starts: array, counts: array,
                 digests: bytes | bytearray | memoryview, checksum: bytes | None = None) -> None:
        self.block_size = block_size
        self.disk_size = disk_size
        self.backup_id = backup_id
        self._starts = starts
        self._counts = counts
        self._firsts = array("Q", [0]) * len(starts)
        total = 0
        for r, count in enumerate(counts):
            self._firsts[r] = total
            total += count
        self._digests = digests
        self._checksum = checksum if checksum is not None else self._body_checksum()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockIndex):
            return NotImplemented
        return (self.block_size, self.disk_size, self.backup_id, self._starts, self._counts, self._digests) == \
            (other.block_size, other.disk_size, other.backup_id, other._starts, other._counts, other._digests)

    @property
    def blocks(self) -> int:
        return block_count(self.disk_size, self.block_size)

    @property
    def data_count(self) -> int:
        """How many blocks hold data (have a digest other than zeros)."""
        return len(self._digests) // DIGEST_SIZE

    def digest(self, i: int) -> bytes:
        r = bisect_right(self._starts, i) - 1
        if r < 0 or i >= self._starts[r] + self._counts[r]:
            return ZERO_DIGEST
        k = (self._firsts[r] + i - self._starts[r]) * DIGEST_SIZE
        return bytes(self._digests[k : k + DIGEST_SIZE])

    def block_length(self, i: int) -> int:
        return min(self.block_size, self.disk_size - i * self.block_size)

    def data_blocks(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(block number, digest) of every block in [start, end) that is not all zeros, in disk order."""
        end = self.blocks if end is None else end
        view = memoryview(self._digests)
        for r in range(max(0, bisect_right(self._starts, start) - 1), len(self._starts)):
            first, count = self._starts[r], self._counts[r]
            if first >= end:
                break
            for i in range(max(first, start), min(first + count, end)):
                k = (self._firsts[r] + i - first) * DIGEST_SIZE
                yield i, bytes(view[k : k + DIGEST_SIZE])

    def data_end(self, i: int) -> int:
        """The first block at or after block `i` that is zeros (`blocks` when data runs to the end): found
        by bisecting the runs, so a seek past a long run of data costs no walk over its blocks."""
        r = bisect_right(self._starts, i) - 1
        while 0 <= r < len(self._starts) and self._starts[r] <= i < self._starts[r] + self._counts[r]:
            i = self._starts[r] + self._counts[r]  # a run that ends where the next begins: go on
            r += 1
        return min(i, self.blocks)

    def data_runs(self) -> Iterator[tuple[int, int]]:
        """[start, end) of each run of blocks holding data, in disk order; every other block is zeros."""
        for first, count in zip(self._starts, self._counts, strict=True):
            yield first, first + count

    def chunk_ids(self) -> set[bytes]:
        """The distinct non-zero digests: the chunks this disk needs."""
        view = memoryview(self._digests)
        return {bytes(view[k : k + DIGEST_SIZE]) for k in range(0, len(view), DIGEST_SIZE)}

    def with_digests(self, renamed: Callable[[bytes], bytes] | None = None) -> BlockIndex:
        """The same runs with each data block's digest replaced by `renamed(digest)` (kept without
        it): the index of this disk as another repository stores it (`stackvault copy`). Its checksum
        is that of the body `to_bytes` writes, also for an index read from `SVFIDX01`, which keeps
        the checksum of its dense digests."""
        digests: bytes | bytearray | memoryview = self._digests
        if renamed is not None:
            view, digests = memoryview(self._digests), bytearray()
            for k in range(0, len(view), DIGEST_SIZE):
                digests += renamed(bytes(view[k : k + DIGEST_SIZE]))
        return BlockIndex(self.block_size, self.disk_size, self.backup_id, self._starts, self._counts, digests)

    def checksum(self) -> bytes:
        """What the backup record names as `index_checksum`: BLAKE3 of the body this index was read
        from or will be written as (an `SVFIDX01` index keeps the checksum of its dense digests)."""
        return self._checksum

    def _body(self) -> tuple[bytes, bytes | bytearray | memoryview]:
        """The stored body in its two parts, the runs table and the digests (never joined: the
        digests of a large disk are not copied)."""
        table = array("Q", [0]) * (2 * len(self._starts))
        table[0::2] = self._starts
        table[1::2] = self._counts
        return runs_to_bytes(table), self._digests

    def _body_checksum(self) -> bytes:
        hasher = blake3.blake3()
        for part in self._body():
            hasher.update(part)
        return hasher.digest()

    def to_bytes(self) -> bytes:
        """The `SVFIDX02` bytes (an index read from `SVFIDX01` is written in the current format)."""
        bid = self.backup_id.encode("ascii")
        if len(bid) > 48:
            raise ValueError(f"backup id too long: {self.backup_id}")
        table, digests = self._body()
        head = HEADER.pack(MAGIC, self.block_size, 0, self.disk_size, self.blocks, bid, len(self._starts),
                           self.data_count, self._body_checksum())
        head += blake3.blake3(head).digest()[:16]
        packer = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compressobj(size=len(table) + len(digests))
        return b"".join((head, packer.compress(table), packer.compress(digests), packer.flush()))

    @classmethod
    def from_bytes(cls, data: bytes, disk_size: int | None = None, block_size: int | None = None) -> BlockIndex:
        """The index in `data`, which the store controls: raises only IndexFormatError.

        With `disk_size` and `block_size` (what the backup record says), an index of another geometry
        is refused before its body is decompressed, so what the header claims, and thus the memory
        decompressing takes, is bounded by the disk the record describes."""
        if data[:8] == MAGIC_V1:
            return _from_v1(data, disk_size, block_size)
        if len(data) < HEADER_SIZE or data[:8] != MAGIC:
            raise IndexFormatError("not a stackvault block index (bad magic or too short)")
        head = data[: HEADER.size]
        if blake3.blake3(head).digest()[:16] != data[HEADER.size : HEADER_SIZE]:
            raise IndexFormatError("block index header checksum mismatch")
        _magic, bs, _res, size, blocks, bid, nruns, ndata, body_sum = HEADER.unpack(head)
        # The header checksum is no authentication: a store can forge it, so every field is checked.
        backup_id = _check_geometry(bs, size, blocks, bid, disk_size, block_size)
        if ndata > blocks or nruns > ndata or nruns > (blocks + 1) // 2 or (nruns == 0) != (ndata == 0):
            raise IndexFormatError(f"block index claims {nruns} runs of {ndata} data blocks in {blocks} blocks")
        body_size = nruns * RUN_SIZE + ndata * DIGEST_SIZE
        body = _decompress(memoryview(data)[HEADER_SIZE:], body_size)
        if blake3.blake3(body).digest() != body_sum:
            raise IndexFormatError("block index body checksum mismatch")
        table = runs_from_bytes(memoryview(body)[: nruns * RUN_SIZE])
        starts, counts = table[0::2], table[1::2]
        total = check_runs(starts, counts, blocks, "block index")
        if total != ndata:
            raise IndexFormatError(f"block index runs hold {total} blocks, its header says {ndata}")
        digests = memoryview(body)[nruns * RUN_SIZE :]
        if next(_zero_entries(digests), None) is not None:
            raise IndexFormatError("block index lists a zero digest as data")
        return cls(bs, size, backup_id, starts, counts, digests, body_sum)


def check_runs(starts: array, counts: array, blocks: int, what: str) -> int:
    """How many blocks the runs hold; IndexFormatError unless they are canonical: ascending, apart
    (touching runs would be one), non-empty and inside a disk of `blocks` blocks."""
    end, total = 0, 0
    for start, count in zip(starts, counts, strict=True):
        if count == 0 or (total and start <= end) or start + count > blocks:
            raise IndexFormatError(f"{what} has a run {start}+{count} out of order, empty, "
                                   f"touching another or past the disk's {blocks} blocks")
        end, total = start + count, total + count
    return total


def _check_geometry(bs: int, size: int, blocks: int, bid: bytes, disk_size: int | None,
                    block_size: int | None) -> str:
    """The backup id of a header whose block size, disk size and block count hold together (and
    match the record's, when given)."""
    if bs < 512 or bs > MAX_BLOCK_SIZE or bs & (bs - 1):
        raise IndexFormatError(f"block index has an invalid block size {bs}")
    if blocks != block_count(size, bs):
        raise IndexFormatError("block index is truncated or has the wrong length")
    if (disk_size is not None and size != disk_size) or (block_size is not None and bs != block_size):
        raise IndexFormatError(f"block index is of a {size}-byte disk of {bs}-byte blocks, "
                               f"not the record's {disk_size} and {block_size}")
    try:
        return bid.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise IndexFormatError("block index names no valid backup id") from None


def _decompress(payload: memoryview, size: int) -> bytes:
    """Exactly one zstd frame of exactly `size` bytes: a frame claiming more is refused before any
    memory is taken for it, so a small object cannot expand to exhaust memory."""
    try:
        claimed = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise IndexFormatError(f"block index body does not decompress ({exc})") from None
    if claimed != size:
        raise IndexFormatError(f"block index body claims {claimed} bytes, its header {size}")
    try:  # into a buffer of the claimed size: a frame holding more fails instead of growing
        body = zstandard.ZstdDecompressor().decompress(payload, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise IndexFormatError(f"block index body does not decompress ({exc})") from None
    if len(body) != size:
        raise IndexFormatError("block index body is truncated")
    return body


def _from_v1(data: bytes, disk_size: int | None, block_size: int | None) -> BlockIndex:
    """An `SVFIDX01` index (32 bytes for every block) as runs; it keeps its dense checksum, which
    its backup record names."""
    if len(data) < HEADER_V1_SIZE:
        raise IndexFormatError("not a stackvault block index (bad magic or too short)")
    head = data[: HEADER_V1.size]
    if blake3.blake3(head).digest()[:16] != data[HEADER_V1.size : HEADER_V1_SIZE]:
        raise IndexFormatError("block index header checksum mismatch")
    _magic, bs, _res, size, blocks, bid, body_sum = HEADER_V1.unpack(head)
    backup_id = _check_geometry(bs, size, blocks, bid, disk_size, block_size)
    dense = memoryview(data)[HEADER_V1_SIZE:]
    if len(dense) != blocks * DIGEST_SIZE:
        raise IndexFormatError("block index is truncated or has the wrong length")
    if blake3.blake3(dense).digest() != body_sum:
        raise IndexFormatError("block index body checksum mismatch")
    builder = IndexBuilder(size, bs, backup_id)
    at = 0
    for first, end in [*_zero_entries(dense), (blocks, blocks)]:
        builder.add_dense(at, dense[at * DIGEST_SIZE : first * DIGEST_SIZE])
        at = end
    return builder.finish(body_sum)


class IndexBuilder:
    """Makes a BlockIndex from digests given in disk order; zero digests are left out."""

    def __init__(self, disk_size: int, block_size: int, backup_id: str = "") -> None:
        self.disk_size, self.block_size, self.backup_id = disk_size, block_size, backup_id
        self._blocks = block_count(disk_size, block_size)
        self._starts, self._counts = array("Q"), array("Q")
        self._digests = bytearray()
        self._next = 0

    def _claim(self, i: int, n: int) -> None:
        if i < self._next or i + n > self._blocks:
            raise ValueError(f"block {i} given out of order or past the disk")
        if self._starts and self._starts[-1] + self._counts[-1] == i:
            self._counts[-1] += n
        else:
            self._starts.append(i)
            self._counts.append(n)
        self._next = i + n

    def add(self, i: int, digest: bytes) -> None:
        """Block `i` (after every block given so far) has `digest`."""
        if digest != ZERO_DIGEST:
            self._claim(i, 1)
            self._digests += digest

    def add_dense(self, i: int, digests: bytes | memoryview) -> None:
        """Blocks from `i` on have these digests (32 bytes each, none of them zeros)."""
        if digests:
            self._claim(i, len(digests) // DIGEST_SIZE)
            self._digests += digests

    def add_from(self, index: BlockIndex, start: int, end: int) -> int:
        """Blocks [start, end) have the digests `index` gives them; returns how many hold data."""
        n = 0
        for i, digest in index.data_blocks(start, end):
            self.add(i, digest)
            n += 1
        return n

    def finish(self, checksum: bytes | None = None) -> BlockIndex:
        return BlockIndex(self.block_size, self.disk_size, self.backup_id, self._starts, self._counts,
                          self._digests, checksum)



def differing_blocks(a: BlockIndex, b: BlockIndex, start: int = 0, end: int | None = None) -> Iterator[int]:
    """Blocks in [start, end) whose digests differ between two indexes, in order: a walk over both
    indexes' data blocks, never over the zeros between them."""
    ia, ib = a.data_blocks(start, end), b.data_blocks(start, end)
    x, y = next(ia, None), next(ib, None)
    while x is not None or y is not None:
        if x is not None and (y is None or x[0] < y[0]):
            yield x[0]
            x = next(ia, None)
        elif y is not None and (x is None or y[0] < x[0]):
            yield y[0]
            y = next(ib, None)
        elif x is not None and y is not None:  # the same block in both
            if x[1] != y[1]:
                yield x[0]
            x, y = next(ia, None), next(ib, None)
