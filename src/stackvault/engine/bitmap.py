"""The `<disk>.bmp` working-state file: which blocks changed since the disk's last Full.

A Differential stores every block set here plus the blocks changed since the last backup, so it
depends only on the Full's chunks and its own. The changed blocks are kept as runs (first block,
count), in memory and on disk, so the file follows the changes, never the disk's size. Layout,
little endian:

    0   8  magic b"SVBMP002"
    8   4  block size, 12 4 reserved
    16  8  disk size, 24 8 number of blocks
    32 48  id of the Full the runs are relative to
    80 48  id of the backup that wrote this file (must be the disk's newest)
    128 8  number of runs
    136 16 BLAKE3 of the header and the runs, first 16 bytes
    152    the runs: first block and block count (8 bytes each), ascending, apart, inside the disk

`SVBMP001` files (one bit per block: block i is bit (i % 8) of byte i // 8 after a 144-byte header
ending in the check) are still read.
"""

from __future__ import annotations

import re
import struct
from array import array
from bisect import bisect_right
from collections.abc import Iterator

import blake3

from .blockindex import RUN_SIZE, IndexFormatError, block_count, check_runs, runs_from_bytes, runs_to_bytes

MAGIC = b"SVBMP002"
HEADER = struct.Struct("<8sII QQ 48s 48s Q")
HEADER_SIZE = HEADER.size + 16
MAGIC_V1 = b"SVBMP001"
HEADER_V1 = struct.Struct("<8sII QQ 48s 48s")
HEADER_V1_SIZE = 144
# A run of full bytes, or one byte with some bits set, of an SVBMP001 bitmap.
_SET_BITS = re.compile(rb"\xff+|[^\x00]")


class ChangeBitmap:
    """Blocks changed since a Full: sorted runs, added in disk order."""

    def __init__(self, block_size: int, disk_size: int, full_backup_id: str = "", backup_id: str = "") -> None:
        self.block_size = block_size
        self.disk_size = disk_size
        self.full_backup_id = full_backup_id
        self.backup_id = backup_id
        self._starts, self._counts = array("Q"), array("Q")

    @classmethod
    def empty(cls, disk_size: int, block_size: int, full_backup_id: str = "", backup_id: str = "") -> ChangeBitmap:
        return cls(block_size, disk_size, full_backup_id, backup_id)

    @classmethod
    def every(cls, disk_size: int, block_size: int, full_backup_id: str = "", backup_id: str = "") -> ChangeBitmap:
        """Every block counts as changed."""
        bitmap = cls(block_size, disk_size, full_backup_id, backup_id)
        bitmap.add_range(0, bitmap.blocks)
        return bitmap

    @property
    def blocks(self) -> int:
        return block_count(self.disk_size, self.block_size)

    def __getitem__(self, i: int) -> bool:
        r = bisect_right(self._starts, i) - 1
        return r >= 0 and i < self._starts[r] + self._counts[r]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChangeBitmap):
            return NotImplemented
        return (self.block_size, self.disk_size, self.full_backup_id, self.backup_id, self._starts, self._counts) \
            == (other.block_size, other.disk_size, other.full_backup_id, other.backup_id, other._starts, other._counts)

    def runs(self) -> Iterator[tuple[int, int]]:
        """(first block, end block) of every run of changed blocks, in disk order."""
        for start, count in zip(self._starts, self._counts, strict=True):
            yield start, start + count

    def add_range(self, start: int, end: int) -> None:
        """Blocks [start, end) changed; `start` is not before the last run's start."""
        if start >= end:
            return
        if self._starts and start < self._starts[-1]:
            raise ValueError(f"block {start} given out of order")
        if self._starts and start <= self._starts[-1] + self._counts[-1]:
            self._counts[-1] = max(self._counts[-1], end - self._starts[-1])
        else:
            self._starts.append(start)
            self._counts.append(end - start)

    def set(self, i: int) -> None:
        self.add_range(i, i + 1)

    def count(self) -> int:
        return sum(self._counts)

    def union(self, other: ChangeBitmap) -> ChangeBitmap:
        """Blocks changed in either (same geometry), with this bitmap's ids."""
        out = ChangeBitmap(self.block_size, self.disk_size, self.full_backup_id, self.backup_id)
        for start, end in sorted([*self.runs(), *other.runs()]):
            out.add_range(start, end)
        return out

    def to_bytes(self) -> bytes:
        table = array("Q", [0]) * (2 * len(self._starts))
        table[0::2] = self._starts
        table[1::2] = self._counts
        runs = runs_to_bytes(table)
        head = HEADER.pack(
            MAGIC, self.block_size, 0, self.disk_size, self.blocks,
            self.full_backup_id.encode("ascii"), self.backup_id.encode("ascii"), len(self._starts),
        )
        return head + blake3.blake3(head + runs).digest()[:16] + runs

    @classmethod
    def from_bytes(cls, data: bytes) -> ChangeBitmap:
        if data[:8] == MAGIC_V1:
            return _from_v1(data)
        if len(data) < HEADER_SIZE or data[:8] != MAGIC:
            raise IndexFormatError("not a stackvault change bitmap (bad magic or too short)")
        head, check, runs = data[: HEADER.size], data[HEADER.size : HEADER_SIZE], data[HEADER_SIZE:]
        if blake3.blake3(head + runs).digest()[:16] != check:
            raise IndexFormatError("change bitmap checksum mismatch")
        _m, block_size, _r, disk_size, blocks, full_id, bid, nruns = HEADER.unpack(head)
        if block_size == 0 or blocks != block_count(disk_size, block_size) or len(runs) != nruns * RUN_SIZE:
            raise IndexFormatError("change bitmap has the wrong length")
        bitmap = _named(block_size, disk_size, full_id, bid)
        table = runs_from_bytes(runs)
        bitmap._starts, bitmap._counts = table[0::2], table[1::2]
        check_runs(bitmap._starts, bitmap._counts, blocks, "change bitmap")
        return bitmap


def _named(block_size: int, disk_size: int, full_id: bytes, bid: bytes) -> ChangeBitmap:
    try:
        return ChangeBitmap(block_size, disk_size, full_id.rstrip(b"\0").decode("ascii"),
                            bid.rstrip(b"\0").decode("ascii"))
    except UnicodeDecodeError:
        raise IndexFormatError("change bitmap names no valid backup id") from None


def _from_v1(data: bytes) -> ChangeBitmap:
    """An `SVBMP001` bitmap (a bit per block) as runs."""
    if len(data) < HEADER_V1_SIZE:
        raise IndexFormatError("not a stackvault change bitmap (bad magic or too short)")
    head, check, bits = data[: HEADER_V1.size], data[HEADER_V1.size : HEADER_V1_SIZE], data[HEADER_V1_SIZE:]
    if blake3.blake3(head + bits).digest()[:16] != check:
        raise IndexFormatError("change bitmap checksum mismatch")
    _m, block_size, _r, disk_size, blocks, full_id, bid = HEADER_V1.unpack(head)
    if block_size == 0 or blocks != block_count(disk_size, block_size) or len(bits) != -(-blocks // 8):
        raise IndexFormatError("change bitmap has the wrong length")
    bitmap = _named(block_size, disk_size, full_id, bid)
    for m in _SET_BITS.finditer(bits):
        if m.group()[0] == 0xFF:
            bitmap.add_range(m.start() * 8, min(m.end() * 8, blocks))
            continue
        for k in range(8):
            if m.group()[0] >> k & 1 and m.start() * 8 + k < blocks:
                bitmap.set(m.start() * 8 + k)
    return bitmap
