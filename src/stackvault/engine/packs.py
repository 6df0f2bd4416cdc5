"""Pack files and chunk indexes of a format 4 repository (docs/repository-format.md, "Packs").

One object per chunk costs one request per block stored or read: on an object store that is the
time and the bill. A pack holds many chunks (tens of MiB), names itself by a hash of its bytes and
lists its own chunks in a trailing header, so that the chunk indexes (chunk id -> pack, offset,
length) are a cache that can always be rebuilt from the packs alone.

Memory is bounded by design: a pack being filled and the packs being uploaded are the only chunk
bytes a backup holds (`PackWriter`'s `inflight`), and the chunk index is one flat sorted array of
44-byte records (`ChunkIndex`), searched by bisection, never a Python object per chunk.
"""

from __future__ import annotations

import bisect
import heapq
import struct
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from blake3 import blake3

from ..errors import RepositoryError
from ..storage import Backend
from .crypto import RepositoryCipher
from .layout import pack_key

PACK_MAGIC = b"SVPK"
HEADER_MAGIC = b"SVPKH001"
INDEX_MAGIC = b"SVPIDX01"
#: A header entry: chunk id, offset in the pack, stored length.
HEADER_ENTRY = struct.Struct("<32sQI")
#: An index record (in files and in memory): chunk id, pack number, offset, stored length.
RECORD = struct.Struct("<32sIII")
_COUNTS = struct.Struct("<II")
_TRAILER = struct.Struct("<I4s")
#: In an encrypted repository the chunks of a pack are padded, as a whole, to a multiple of this,
#: the header's plain bytes to a multiple of `HEADER_PAD`, and reads are widened to this grid, so
#: that the store never sees where one chunk ends and the next begins (docs/repository-format.md).
PAD = 64 << 10
HEADER_PAD = 4 << 10
#: The largest pack a reader accepts (offsets are 32-bit in index records).
MAX_PACK = 1 << 30
MIN_PACK = 1 << 20
#: 16 MiB: a hundred times fewer requests than one object per 512 KiB chunk on a store, while a
#: restore's ranged reads stay short and memory small (docs/storage.md, "Pack size").
DEFAULT_PACK_SIZE = 16 << 20


class PackFormatError(RepositoryError):
    """A pack or a chunk index that is not what stackvault writes (named in `problem`)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} is damaged: {problem}", "run `stackvault verify --deep`")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Location:
    pack_id: bytes
    offset: int
    length: int


# -- one pack ---------------------------------------------------------------------------------------
Entries = list[tuple[bytes, int, int]]


def seal_pack(body: bytearray, listed: Entries, cipher: RepositoryCipher | None) -> bytes:
    """Finish a pack in place: `body` holds its chunks (as `listed`: id, offset, length); padding,
    header and trailer are appended to it. Returns the pack id; `body` is then the pack."""
    if cipher is not None:
        body += bytes(-len(body) % PAD)
    pack_id = blake3(body).digest()
    header = bytearray(HEADER_MAGIC + struct.pack("<I", len(listed)))
    for item in listed:
        header += HEADER_ENTRY.pack(*item)
    stored_header: bytes = bytes(header)
    if cipher is not None:
        header += bytes(-len(header) % HEADER_PAD)
        stored_header = cipher.seal(pack_key(pack_id), bytes(header))
    body += stored_header
    body += _TRAILER.pack(len(stored_header), PACK_MAGIC)
    return pack_id


def header_span(pack_size: int, tail: bytes, key: str) -> tuple[int, int]:
    """Where the stored header lies (offset, length), from the pack's last 8 bytes."""
    if pack_size < _TRAILER.size or len(tail) < _TRAILER.size:
        raise PackFormatError(key, "too short to be a pack")
    length, magic = _TRAILER.unpack(tail[-_TRAILER.size:])
    if magic != PACK_MAGIC or length + _TRAILER.size > pack_size:
        raise PackFormatError(key, "no pack trailer")
    return pack_size - _TRAILER.size - length, length


def parse_header(stored: bytes, key: str, data_end: int,
                 cipher: RepositoryCipher | None) -> list[tuple[bytes, int, int]]:
    """A pack's chunk list, every entry checked to lie in the pack's data and apart from the others."""
    if cipher is not None:
        stored = cipher.open(key, stored)
    if len(stored) < 12 or stored[:8] != HEADER_MAGIC:
        raise PackFormatError(key, "its header has no magic")
    (count,) = struct.unpack_from("<I", stored, 8)
    if 12 + count * HEADER_ENTRY.size > len(stored):
        raise PackFormatError(key, f"its header announces {count} chunks but is shorter")
    entries = [HEADER_ENTRY.unpack_from(stored, 12 + i * HEADER_ENTRY.size) for i in range(count)]
    at = 0
    for _, offset, length in entries:
        if offset < at or offset + length > data_end or length == 0:
            raise PackFormatError(key, "its header lists a chunk outside the pack or overlapping another")
        at = offset + length
    return entries


def read_header(store: Backend, pack_id: bytes, size: int,
                cipher: RepositoryCipher | None) -> list[tuple[bytes, int, int]]:
    """A pack's chunk list read with two ranged requests (trailer, header), not the whole pack."""
    key = pack_key(pack_id)
    tail = store.get_range(key, max(0, size - _TRAILER.size), _TRAILER.size)
    offset, length = header_span(size, tail, key)
    return parse_header(store.get_range(key, offset, length), key, offset, cipher)


def check_pack(data: bytes, pack_id: bytes, cipher: RepositoryCipher | None) -> list[tuple[bytes, int, int]]:
    """A whole pack read back: its name matches its bytes, its header parses. Returns the header."""
    key = pack_key(pack_id)
    offset, length = header_span(len(data), data[-_TRAILER.size:], key)
    if blake3(memoryview(data)[:offset]).digest() != pack_id:
        raise PackFormatError(key, "its bytes do not match its name")
    return parse_header(data[offset : offset + length], key, offset, cipher)


def read_span(loc: Location, encrypted: bool) -> tuple[int, int]:
    """The byte range read for a chunk: exact in a plain repository, widened to the PAD grid when
    encrypted (the store sees only whole grid cells, never a chunk's own bounds)."""
    start, end = loc.offset, loc.offset + loc.length
    if encrypted:
        start, end = start - start % PAD, end + (-end % PAD)
    return start, end


# -- chunk indexes -----------------------------------------------------------------------------------
class ChunkIndex:
    """Chunk id -> Location, as one sorted bytearray of RECORD-sized entries and a table of packs.

    44 bytes a chunk (plus 32 a pack): a repository of 2 million chunks (1 TiB of 512 KiB blocks)
    takes 88 MiB, where a dict of Python objects would take several times that."""

    def __init__(self, packs: list[bytes], records: bytes | bytearray) -> None:
        self.packs = packs
        self._records = records
        self._keys = _Keys(records)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, digest: bytes) -> Location | None:
        i = bisect.bisect_left(self._keys, digest)
        if i == len(self._keys) or self._keys[i] != digest:
            return None
        _, number, offset, length = RECORD.unpack_from(self._records, i * RECORD.size)
        return Location(self.packs[number], offset, length)

    def __iter__(self) -> Iterator[tuple[bytes, Location]]:
        for digest, number, offset, length in RECORD.iter_unpack(self._records):
            yield digest, Location(self.packs[number], offset, length)

    def pack_ids(self) -> set[bytes]:
        return set(self.packs)

    @classmethod
    def merged(cls, parts: Iterable[ChunkIndex]) -> ChunkIndex:
        """One index of several (each sorted): a chunk stored in two packs keeps one location."""
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        numbers: dict[bytes, int] = {}
        for part in parts:
            for pack_id in part.packs:
                numbers.setdefault(pack_id, len(numbers))
        records = bytearray()
        last = b""
        for digest, loc in heapq.merge(*parts, key=lambda item: item[0]):
            if digest != last:
                records += RECORD.pack(digest, numbers[loc.pack_id], loc.offset, loc.length)
                last = digest
        return cls(list(numbers), records)

    @classmethod
    def of_entries(cls, entries: Iterable[tuple[bytes, Location]]) -> ChunkIndex:
        """An index of unsorted entries (a backup's new chunks, a pack header's)."""
        numbers: dict[bytes, int] = {}
        records = sorted({digest: RECORD.pack(digest, numbers.setdefault(loc.pack_id, len(numbers)), loc.offset,
                                              loc.length) for digest, loc in entries}.values())
        return cls(list(numbers), b"".join(records))

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(index id, file bytes): `SVPIDX01`, counts, pack ids, records, BLAKE3 of all before it."""
        body = INDEX_MAGIC + _COUNTS.pack(len(self.packs), len(self)) + b"".join(self.packs) + bytes(self._records)
        digest = blake3(body).digest()
        return digest, body + digest

    @classmethod
    def from_bytes(cls, data: bytes, key: str) -> ChunkIndex:
        """An index file, checked whole: magic, counts, checksum, sorted ids, pack numbers in range."""
        if len(data) < 16 + 32 or data[:8] != INDEX_MAGIC:
            raise PackFormatError(key, "not a chunk index")
        packs_n, records_n = _COUNTS.unpack_from(data, 8)
        start = 16 + 32 * packs_n
        if len(data) != start + records_n * RECORD.size + 32:
            raise PackFormatError(key, "its length does not match its counts")
        if blake3(memoryview(data)[:-32]).digest() != data[-32:]:
            raise PackFormatError(key, "checksum mismatch")
        packs = [data[16 + 32 * i : 48 + 32 * i] for i in range(packs_n)]
        records = data[start:-32]
        last = b""
        for digest, number, offset, length in RECORD.iter_unpack(records):
            if digest <= last or number >= packs_n or offset + length > MAX_PACK:
                raise PackFormatError(key, "its records are not sorted or name no pack")
            last = digest
        return cls(packs, records)


class _Keys:
    """The chunk ids of a record array as a sequence, for `bisect` (no list of them is ever built)."""

    def __init__(self, records: bytes | bytearray) -> None:
        self._view = memoryview(records)

    def __len__(self) -> int:
        return len(self._view) // RECORD.size

    def __getitem__(self, i: int) -> bytes:
        at = i * RECORD.size
        return bytes(self._view[at : at + 32])


# -- writing packs during a backup ---------------------------------------------------------------------
class PackWriter:
    """Chunks appended by the backup's workers, cut into packs of about `pack_size` bytes, uploaded
    `parallel` at a time. At most `parallel` + 1 packs are in memory: `add` waits for an upload slot.

    `flush` uploads what is left, waits for every upload, and returns where each chunk went: the
    caller writes the chunk index only then, so that no index ever names a pack not yet stored."""

    def __init__(self, store: Backend, cipher: RepositoryCipher | None, pack_size: int, parallel: int) -> None:
        self.store = store
        self.cipher = cipher
        self.pack_size = pack_size
        self._lock = threading.Lock()
        self._cut = threading.Lock()
        self._body = bytearray()  # the pack being filled: its chunks back to back, as they will be stored
        self._listed: Entries = []
        self._slots = threading.BoundedSemaphore(parallel)
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="sv-pack")
        self._uploads: list[Future] = []
        self._written: list[tuple[bytes, Location]] = []
        self._pending: set[bytes] = set()

    def add(self, digest: bytes, blob: bytes) -> None:
        """Append a chunk (`blob` as a format 3 repository would store it, sealed when encrypted).
        A full pack is cut by one worker at a time, once an upload slot is free: the others wait
        behind it, so the pack being filled outgrows `pack_size` by at most a chunk per worker."""
        with self._lock:
            if digest in self._pending:
                return
            self._pending.add(digest)
            self._listed.append((digest, len(self._body), len(blob)))
            self._body += blob
            if len(self._body) < self.pack_size:
                return
        with self._cut:
            self._slots.acquire()
            with self._lock:
                full = self._take()
            if full is not None:
                self._upload_in_slot(full)
            else:  # cut by the worker before this one
                self._slots.release()

    def _take(self) -> tuple[bytearray, Entries] | None:
        """The pack being filled, if it holds anything, and a new empty one in its place."""
        if not self._listed:
            return None
        full = (self._body, self._listed)
        self._body, self._listed = bytearray(), []
        return full

    def holds(self, digest: bytes) -> bool:
        """Whether this run already took the chunk (in a pack being filled, uploaded or stored)."""
        with self._lock:
            return digest in self._pending

    def _upload_in_slot(self, pack: tuple[bytearray, Entries]) -> None:
        """Start uploading a pack; the caller holds an upload slot, given back when it is stored."""
        fut = self._pool.submit(self._upload, *pack)
        fut.add_done_callback(lambda _: self._slots.release())
        with self._lock:
            self._uploads.append(fut)

    def _upload(self, body: bytearray, listed: Entries) -> None:
        pack_id = seal_pack(body, listed, self.cipher)
        self.store.put(pack_key(pack_id), body)
        with self._lock:
            self._written.extend((d, Location(pack_id, o, n)) for d, o, n in listed)

    def flush(self) -> list[tuple[bytes, Location]]:
        """Store the last pack, wait for every upload (re-raising the first failure); the locations
        of every chunk stored since the last flush."""
        with self._cut:
            with self._lock:
                rest = self._take()
            if rest is not None:
                self._slots.acquire()
                self._upload_in_slot(rest)
        with self._lock:
            uploads, self._uploads = self._uploads, []
        for fut in uploads:
            fut.result()
        with self._lock:
            written, self._written = self._written, []
        return written

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

