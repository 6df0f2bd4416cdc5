"""A qcow2 image read from a sequential stream (a download), with no local copy of the file.

Why this works: a download arrives in file order, while the engine reads guest offsets in increasing
order. The writers that make snapshots (`qemu-img convert`, a QMP backup job, Nova's upload of
either) allocate each L2 table before the data clusters it maps, and allocate data roughly in guest
order, so the metadata nearly always passes before the data it describes, and data arrives close to
the order the engine wants it. The reader follows the stream: it parses the header, then the L1
table, each L2 table and each data cluster as it passes, and keeps what arrives before the engine
asks for it (in memory up to a bound, then in a sparse spill file), so any layout still works, only
slower. Bytes that pass before the metadata naming them are kept until every L2 table has been seen.

What it cannot map with certainty is refused from the header (`Qcow2Unsupported`: encryption,
extended L2, unknown features) so that the caller can fall back to a full download; an image that
names another file (backing file, external data file) is refused outright (`ImageRefused`): its
owner, a tenant, would choose what the proxy reads. What turns out wrong mid-stream (a truncated or
inconsistent image) fails with a `SourceError`. It never returns bytes it is not sure of.

The image is the tenant's, so everything it claims is bounded before it is believed: the virtual
size, the L1 table (qemu's own limit), how many clusters may be awaited at once, and what one
compressed cluster may decompress to. Memory stays within `memory_limit` for data plus a bounded
amount per awaited cluster, whatever the header says.
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import struct
import sys
import tempfile
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard

from ..errors import SourceError
from .sources import MAX_VIRTUAL_SIZE, DiskSource

QCOW2_MAGIC = b"QFI\xfb"
HEAD_SIZE = 64 << 10  # what the caller reads before deciding: the header and its extensions
READ_SIZE = 1 << 20
DEFAULT_MEMORY_LIMIT = 64 << 20

OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00  # host offset in an L1 or standard L2 entry
COMPRESSED = 1 << 62
ZERO_FLAG = 1  # v3: the cluster reads as zeros
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_COMPRESSION, INCOMPAT_EXTL2 = (1 << i for i in range(5))
COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}
MAX_L1_BYTES = 32 << 20  # qemu's QCOW_MAX_L1_SIZE: it opens no image with a larger L1 table
#: Data clusters mapped but not yet passed in the stream, beyond one L2 table's worth. Images
#: written in guest order await at most one L2 table's worth (8192 clusters of 64 KiB, 262,144 of
#: 2 MiB: qemu allocates an L2 table before the data it maps), so that many plus this margin are
#: awaited (`max_awaited`); each awaited cluster costs ~350 bytes of bookkeeping, so past it (~25 MiB
#: with 64 KiB clusters, ~115 MiB with 2 MiB ones) the image is refused rather than the proxy's memory spent.
AWAITED_MARGIN = 1 << 16
ZSTD_MAX_WINDOW = 8 << 20  # qemu compresses one cluster (2 MiB at most) per frame


def max_awaited(cluster_size: int) -> int:
    """How many mapped clusters may wait for their data: one L2 table's worth, and a margin."""
    return cluster_size // 8 + AWAITED_MARGIN


class Qcow2Unsupported(SourceError):
    """The image uses a qcow2 feature the stream reader does not handle: read it from a local copy."""


class ImageRefused(SourceError):
    """The image is not read at all: it names another file, or claims sizes past the bounds."""


class Stream(Protocol):
    def read(self, n: int, /) -> bytes: ...


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    cluster_bits: int
    size: int
    l1_offset: int
    l1_size: int
    compression: str  # 'zlib' or 'zstd'

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits


def parse_header(head: bytes, name: str = "image") -> Qcow2Header:
    """The header of a qcow2 file from its first bytes; raises Qcow2Unsupported for what streaming cannot map."""

    def refuse(what: str) -> Qcow2Unsupported:
        return Qcow2Unsupported(f"qcow2 image {name} {what}", "it is read from a full local copy instead")

    def reject(what: str) -> ImageRefused:
        return ImageRefused(f"image refused: qcow2 image {name} {what}",
                            "make it self-contained with `qemu-img convert` and upload it again")

    if len(head) < 72 or head[:4] != QCOW2_MAGIC:
        raise refuse("does not start with a qcow2 header")
    (version, backing_off, _backing_len, cluster_bits, size, crypt, l1_size, l1_offset, _rt_off, _rt_clusters,
     _nb_snapshots, _snap_off) = struct.unpack_from(">IQIIQIIQQIIQ", head, 4)
    if version not in (2, 3):
        raise refuse(f"has qcow2 version {version}, not 2 or 3")
    if backing_off:
        raise reject("has a backing file")
    if crypt:
        raise refuse("is encrypted")
    if not 9 <= cluster_bits <= 21:
        raise refuse(f"has cluster_bits {cluster_bits}, outside 9..21")
    compression = "zlib"
    if version == 3:
        if len(head) < 104:
            raise refuse("has a short version 3 header")
        incompatible, = struct.unpack_from(">Q", head, 72)
        header_length, = struct.unpack_from(">I", head, 100)
        if incompatible & INCOMPAT_CORRUPT:
            raise refuse("is marked corrupt")
        if incompatible & INCOMPAT_DATA_FILE:
            raise reject("keeps its data in an external data file")
        if incompatible & INCOMPAT_EXTL2:
            raise refuse("uses extended L2 entries (subclusters)")
        if incompatible & ~(INCOMPAT_DIRTY | INCOMPAT_COMPRESSION):
            raise refuse(f"uses unknown incompatible features {incompatible:#x}")
        if incompatible & INCOMPAT_COMPRESSION:
            if header_length <= 104 or len(head) <= 104:
                raise refuse("announces a compression type but has no field for it")
            compression = COMPRESSION_TYPES.get(head[104], "")
            if not compression:
                raise refuse(f"uses unknown compression type {head[104]}")
    if size > MAX_VIRTUAL_SIZE:
        raise reject(f"claims a virtual size of {size} bytes, more than {MAX_VIRTUAL_SIZE >> 40} TiB")
    if l1_size * 8 > MAX_L1_BYTES:
        raise reject(f"has an L1 table of {l1_size} entries, more than qemu opens")
    cluster_size = 1 << cluster_bits
    per_l1 = cluster_size * (cluster_size // 8)  # guest bytes one L2 table maps
    if l1_size < -(-size // per_l1):
        raise refuse(f"has an L1 table of {l1_size} entries, too few for {size} bytes")
    if l1_size and (l1_offset == 0 or l1_offset % cluster_size):
        raise refuse(f"has its L1 table at unaligned offset {l1_offset}")
    return Qcow2Header(version, cluster_bits, size, l1_offset, l1_size, compression)


class _Budget:
    """Memory shared by the two buffers of one image; `peak` is what the tests check."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0


class _ClusterBuffer:
    """Clusters kept until they are wanted, by index: in memory while the budget allows, then in a
    sparse temporary file (unlinked at once, so nothing is left behind even by a crash)."""

    def __init__(self, cluster_size: int, budget: _Budget, tmpdir: str | None) -> None:
        self.cluster_size = cluster_size
        self.budget = budget
        self.tmpdir = tmpdir
        self.spilled_bytes = 0
        self._zero = bytes(cluster_size)
        self._mem: dict[int, bytes | int] = {}  # an int is the length of an all-zero cluster
        self._spilled: dict[int, int] = {}  # index -> length in the spill file
        self._file: BinaryIO | None = None

    def __contains__(self, index: int) -> bool:
        return index in self._mem or index in self._spilled

    def put(self, index: int, data: bytes) -> None:
        self.pop(index)
        if data == self._zero[: len(data)]:
            self._mem[index] = len(data)
        elif self.budget.used + len(data) <= self.budget.limit:
            self._mem[index] = data
            self.budget.used += len(data)
            self.budget.peak = max(self.budget.peak, self.budget.used)
        else:
            if self._file is None:
                if self.tmpdir:
                    os.makedirs(self.tmpdir, exist_ok=True)
                self._file = tempfile.TemporaryFile(prefix="sv-qcow2-", dir=self.tmpdir)  # noqa: SIM115 - closed by close()
            os.pwrite(self._file.fileno(), data, index * self.cluster_size)
            self._spilled[index] = len(data)
            self.spilled_bytes += len(data)

    def get(self, index: int) -> bytes | None:
        """The cluster, or None when it was never kept."""
        held = self._mem.get(index)
        if isinstance(held, int):
            return bytes(held)
        if held is not None:
            return held
        length = self._spilled.get(index)
        if length is None or self._file is None:
            return None
        data = os.pread(self._file.fileno(), length, index * self.cluster_size)
        if len(data) != length:
            raise SourceError(f"spill file in {self.tmpdir} lost data (cluster {index})",
                              "check the file system of the job's tmpdir")
        return data

    def pop(self, index: int) -> None:
        held = self._mem.pop(index, None)
        if isinstance(held, bytes):
            self.budget.used -= len(held)
        self._spilled.pop(index, None)

    def clear(self) -> None:
        for index in list(self._mem):
            self.pop(index)
        self._spilled.clear()
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(slots=True)
class _Want:
    """A byte range of the file to catch as it passes, and what to do with it: `done(arg, bytes)`.
    Small on purpose (slots, no closure, no buffer until its bytes start passing): an image may
    have a few hundred thousand of them waiting."""

    start: int
    end: int
    done: Callable[[object, bytes], None]
    arg: object = None
    partial_ok: bool = False  # compressed data may end past EOF: it ends itself, a cut one fails to decompress
    buf: bytearray | None = None

    def finish(self) -> None:
        self.done(self.arg, bytes(self.buf or b""))


class Qcow2StreamSource(DiskSource):
    """A qcow2 image read by guest offsets, in increasing order, from a sequential stream of its file.

    `open()` takes the stream and the bytes already read from it (the caller's `HEAD_SIZE` probe).
    `finish()` drains the rest of the stream, so that a caller hashing the stream sees every byte.
    """

    def open(self, stream: Stream, head: bytes, *, tmpdir: str | None = None,
             memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        self.header = hdr = parse_header(head, self.name)
        self.format = "qcow2"
        self.size = hdr.size
        self._stream = stream
        self._head = memoryview(head)
        self._cs = cs = hdr.cluster_size
        self._per_l2 = cs // 8
        self._max_awaited = max_awaited(cs)
        self._clusters = -(-hdr.size // cs)
        self._budget = _Budget(memory_limit)
        self._guest = _ClusterBuffer(cs, self._budget, tmpdir)  # decoded data by guest cluster
        self._host = _ClusterBuffer(cs, self._budget, tmpdir)  # passed bytes not yet known to be needed
        self._wants: list[tuple[int, int, _Want]] = []  # heap by start offset, not started yet
        self._active: list[_Want] = []
        self._seq = itertools.count()
        self._pending: set[int] = set()  # guest clusters whose data has not passed yet
        self._l1: array | None = None
        self._l2_seen: set[int] = set()  # L1 indexes whose L2 table has been parsed
        self._l2_missing = -1  # L2 tables not parsed yet; -1 until the L1 table is known
        self._next = 0  # the engine reads in increasing guest order
        self._eof = False
        self._pos = 0
        self._read_exact(cs)  # the header cluster holds nothing else
        self._pos = cs
        if hdr.l1_size:
            self._want(hdr.l1_offset, hdr.l1_offset + 8 * hdr.l1_size, self._got_l1)
        else:
            self._got_l1(None, b"")

    # ---- what the engine calls -----------------------------------------------------------------
    def data_extents(self) -> list[tuple[int, int]]:
        """Everything but the guest ranges whose L1 entry is empty: known from the L1 table alone,
        which lies near the start of the file; smaller holes are found by the engine's zero check."""
        self._pump_until(lambda: self._l1 is not None, "its L1 table")
        assert self._l1 is not None
        span = self._cs * self._per_l2
        extents: list[tuple[int, int]] = []
        for i in range(-(-self.size // span)):
            if self._l1[i] & OFFSET_MASK:
                start, length = i * span, min(span, self.size - i * span)
                if extents and sum(extents[-1]) == start:
                    extents[-1] = (extents[-1][0], extents[-1][1] + length)
                else:
                    extents.append((start, length))
        return extents

    def read(self, offset: int, length: int) -> bytes:
        if offset < self._next:
            raise SourceError(f"a streamed qcow2 image is read in guest order (asked {offset} after {self._next})",
                              "this is a bug in stackvault; report it")
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        self._next = end
        cs = self._cs
        parts: list[bytes | int] = []  # an int is a run of zeros, made once per run
        for g in range(offset // cs, (end - 1) // cs + 1):
            lo, hi = max(offset, g * cs), min(end, (g + 1) * cs)
            data = self._cluster(g, last=hi == min((g + 1) * cs, self.size))
            if data is not None:
                parts.append(data[lo - g * cs: hi - g * cs])
            elif parts and isinstance(parts[-1], int):
                parts[-1] += hi - lo
            else:
                parts.append(hi - lo)
        if len(parts) == 1:
            return bytes(parts[0]) if isinstance(parts[0], int) else parts[0]
        return b"".join(bytes(p) if isinstance(p, int) else p for p in parts)

    def finish(self) -> None:
        """Reads the rest of the stream (nothing is kept any more) so the caller can check its hash."""
        while self._pump():
            pass

    def close(self) -> None:
        for buffer in (getattr(self, "_guest", None), getattr(self, "_host", None)):
            if buffer is not None:
                buffer.close()
        super().close()

    @property
    def memory_peak(self) -> int:
        """Most bytes of data buffered in memory at once."""
        return self._budget.peak

    @property
    def spilled_bytes(self) -> int:
        """Bytes that went to the spill file because memory was full."""
        return self._guest.spilled_bytes + self._host.spilled_bytes

    # ---- mapping ------------------------------------------------------------------------------
    def _cluster(self, g: int, *, last: bool) -> bytes | None:
        """Guest cluster g, or None when it reads as zeros; `last` when the engine is done with it."""
        i = g // self._per_l2
        if i not in self._l2_seen or g in self._pending:  # else its data is here already, or zeros
            self._pump_until(lambda: self._l1 is not None, "its L1 table")
            if not self._l1[i] & OFFSET_MASK:  # type: ignore[index]  # read by _pump_until above
                return None
            self._pump_until(lambda: i in self._l2_seen, f"the L2 table for guest offset {g * self._cs}")
            self._pump_until(lambda: g not in self._pending, f"the data of guest offset {g * self._cs}")
        data = self._guest.get(g)
        if last:
            self._guest.pop(g)
        return data

    def _got_l1(self, _arg: object, raw: bytes) -> None:
        l1 = _entries(raw)
        tables: dict[int, list[int]] = {}
        for i in range(-(-self.size // (self._cs * self._per_l2))):
            off = l1[i] & OFFSET_MASK
            if off:
                self._check_aligned(off, f"L2 table of L1 entry {i}")
                if off in tables:  # qemu never shares one table between two entries of one L1 table
                    raise ImageRefused(f"image refused: qcow2 image {self.name}: L1 entries {tables[off][0]} and "
                                       f"{i} name the same L2 table", "the image is damaged or crafted")
                tables[off] = [i]
        self._l1 = l1
        self._l2_missing = len(tables)
        if not tables:
            self._host.clear()
        for off, indexes in tables.items():
            self._want(off, off + self._cs, self._got_l2, indexes)

    def _got_l2(self, indexes: list[int], raw: bytes) -> None:
        l2 = _entries(raw)
        hdr = self.header
        csize_shift = 62 - (hdr.cluster_bits - 8)
        csize_mask = (1 << (hdr.cluster_bits - 8)) - 1
        coffset_mask = (1 << csize_shift) - 1
        for i in indexes:
            base = i * self._per_l2
            for j in range(min(self._per_l2, self._clusters - base)):
                entry, g = l2[j], base + j
                if entry & COMPRESSED:
                    off = entry & coffset_mask
                    csize = (((entry >> csize_shift) & csize_mask) + 1) * 512 - (off & 511)
                    self._await(g)
                    self._want(off, off + csize, self._got_compressed, g, partial_ok=True)
                    continue
                off = entry & OFFSET_MASK
                if (hdr.version >= 3 and entry & ZERO_FLAG) or not off:
                    continue
                self._check_aligned(off, f"data of guest offset {g * self._cs}")
                self._await(g)
                self._want(off, off + self._cs, self._got_data, g)
            self._l2_seen.add(i)
        self._l2_missing -= 1
        if self._l2_missing == 0:  # every mapping is known: nothing that passed can be needed any more
            self._host.clear()

    def _await(self, g: int) -> None:
        if len(self._pending) >= self._max_awaited:
            raise ImageRefused(f"image refused: qcow2 image {self.name} maps more than {self._max_awaited} clusters "
                               "ahead of their data in the stream", "back the image up from a local copy "
                               "written in guest order (qemu-img convert)")
        self._pending.add(g)

    def _got_data(self, g: int, raw: bytes) -> None:
        self._pending.discard(g)
        self._guest.put(g, raw)

    def _got_compressed(self, g: int, raw: bytes) -> None:
        cs = self._cs
        try:
            if self.header.compression == "zstd":  # read at most one cluster: a frame may claim gigabytes
                dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
                with dctx.stream_reader(io.BytesIO(raw)) as reader:
                    data = b""
                    while len(data) < cs and (piece := reader.read(cs - len(data))):
                        data += piece
            else:
                data = zlib.decompressobj(-15).decompress(raw, cs)
        except (zlib.error, zstandard.ZstdError) as exc:
            data, why = b"", str(exc)
        else:
            why = f"{len(data)} bytes instead of {cs}"
        if len(data) < min(cs, self.size - g * cs):
            raise SourceError(f"qcow2 image {self.name}: compressed cluster at guest offset {g * cs} does not "
                              f"decompress ({why})", "the image is damaged; check it with qemu-img check")
        self._got_data(g, data)

    def _check_aligned(self, off: int, what: str) -> None:
        if off % self._cs:
            raise SourceError(f"qcow2 image {self.name}: {what} is at unaligned offset {off}",
                              "the image is damaged; check it with qemu-img check")

    # ---- following the stream -----------------------------------------------------------------
    def _want(self, start: int, end: int, done: Callable, arg: object = None, *, partial_ok: bool = False) -> None:
        """Catch bytes [start, end) of the file; those already passed come from what was kept."""
        want = _Want(start, end, done, arg, partial_ok)
        if start >= self._pos:
            heapq.heappush(self._wants, (start, next(self._seq), want))
            return
        cs = self._cs
        want.buf = bytearray()
        for c in range(start // cs, (min(end, self._pos) - 1) // cs + 1):
            kept = self._host.get(c)
            if kept is None:
                raise SourceError(f"qcow2 image {self.name}: bytes at offset {max(start, c * cs)} are mapped by "
                                  "metadata that came after them and were not kept (an unusual layout)",
                                  "back the image up from a full local copy")
            want.buf += kept[max(start, c * cs) - c * cs: min(end, self._pos, (c + 1) * cs) - c * cs]
        if end <= self._pos:
            want.finish()
        else:
            self._active.append(want)

    def _keeping(self) -> bool:
        """Passed bytes must be kept while some L2 table (or the L1 table) is still to come."""
        return self._l2_missing != 0

    def _pump(self) -> bool:
        """Process the next piece of the stream; False at its end."""
        if self._eof:
            return False
        cs = self._cs
        data = self._read_exact(max(cs, READ_SIZE))
        if not data:
            self._eof = True
            if all(want.partial_ok for want in self._active):  # compressed data may claim sectors past the end
                active, self._active = self._active, []
                for want in active:
                    want.finish()
            return False
        if not self._wants and not self._active and not self._keeping():
            self._pos += len(data)
            return True
        view = memoryview(data)
        for at in range(0, len(data), cs):
            self._take_cluster(view[at: at + cs])
        return True

    def _take_cluster(self, view: memoryview) -> None:
        pos, end = self._pos, self._pos + len(view)
        while self._wants and self._wants[0][0] < end:
            self._active.append(heapq.heappop(self._wants)[2])
        if len(self._active) == 1 and self._active[0].start == pos and self._active[0].end == end:
            want = self._active.pop()  # the usual case: one whole cluster wanted, nothing else here
            self._pos = end
            want.done(want.arg, bytes(view))
            return
        covered: list[tuple[int, int]] = []
        finished: list[_Want] = []
        for want in self._active:
            lo, hi = max(want.start, pos), min(want.end, end)
            if lo < hi:
                if want.buf is None:
                    want.buf = bytearray()
                want.buf += view[lo - pos: hi - pos]
                covered.append((lo, hi))
            if want.end <= end:
                finished.append(want)
        if self._keeping() and not _covers(covered, pos, end):
            self._host.put(pos // self._cs, bytes(view))
        self._pos = end
        for want in finished:
            self._active.remove(want)
            want.finish()

    def _pump_until(self, ready: Callable[[], bool], what: str) -> None:
        while not ready():
            if not self._pump() and not ready():
                raise SourceError(f"qcow2 image {self.name} ended at byte {self._pos} before {what}",
                                  "the download was cut short or the image is damaged; retry the backup")

    def _read_exact(self, n: int) -> bytes:
        """n bytes of the stream (fewer only at its end): the head first, then the stream."""
        parts: list[bytes] = []
        if self._head:
            parts.append(bytes(self._head[:n]))
            self._head = self._head[n:]
            n -= len(parts[0])
        while n > 0:
            piece = self._stream.read(n)
            if not piece:
                break
            parts.append(piece)
            n -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _entries(raw: bytes) -> array:
    """Big-endian 64-bit table entries."""
    table = array("Q", raw[: len(raw) // 8 * 8])
    if sys.byteorder == "little":
        table.byteswap()
    return table


def _covers(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    reached = start
    for lo, hi in sorted(ranges):
        if lo > reached:
            return False
        reached = max(reached, hi)
    return reached >= end
