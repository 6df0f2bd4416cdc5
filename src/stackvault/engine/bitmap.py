"""The `<disk>.bmp` working-state file: which blocks changed since the disk's last Full.

A Differential stores every block set here plus the blocks changed since the last backup, so it
depends only on the Full's chunks and its own. Layout, little endian:

    0   8  magic b"SVBMP001"
    8   4  block size, 12 4 reserved
    16  8  disk size, 24 8 number of blocks
    32 48  id of the Full the bits are relative to
    80 48  id of the backup that wrote this file (must be the disk's newest)
    128 16 BLAKE3 of the header and the bits, first 16 bytes
    144    the bits, block i is bit (i % 8) of byte i // 8
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from .blockindex import IndexFormatError, block_count

MAGIC = b"SVBMP001"
HEADER = struct.Struct("<8sII QQ 48s 48s")
HEADER_SIZE = 144


@dataclass
class ChangeBitmap:
    block_size: int
    disk_size: int
    full_backup_id: str
    backup_id: str
    bits: bytearray

    @classmethod
    def empty(cls, disk_size: int, block_size: int, full_backup_id: str = "", backup_id: str = "") -> ChangeBitmap:
        n = block_count(disk_size, block_size)
        return cls(block_size, disk_size, full_backup_id, backup_id, bytearray(-(-n // 8)))

    @property
    def blocks(self) -> int:
        return block_count(self.disk_size, self.block_size)

    def __getitem__(self, i: int) -> bool:
        return bool(self.bits[i >> 3] & (1 << (i & 7)))

    def set(self, i: int) -> None:
        self.bits[i >> 3] |= 1 << (i & 7)

    def count(self) -> int:
        return int.from_bytes(self.bits, "little").bit_count()

    def to_bytes(self) -> bytes:
        head = HEADER.pack(
            MAGIC, self.block_size, 0, self.disk_size, self.blocks,
            self.full_backup_id.encode("ascii"), self.backup_id.encode("ascii"),
        )
        return head + blake3.blake3(head + bytes(self.bits)).digest()[:16] + bytes(self.bits)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChangeBitmap:
        if len(data) < HEADER_SIZE or data[:8] != MAGIC:
            raise IndexFormatError("not a stackvault change bitmap (bad magic or too short)")
        head, check, bits = data[: HEADER.size], data[HEADER.size : HEADER_SIZE], data[HEADER_SIZE:]
        if blake3.blake3(head + bits).digest()[:16] != check:
            raise IndexFormatError("change bitmap checksum mismatch")
        _m, block_size, _r, disk_size, blocks, full_id, bid = HEADER.unpack(head)
        if blocks != block_count(disk_size, block_size) or len(bits) != -(-blocks // 8):
            raise IndexFormatError("change bitmap has the wrong length")
        return cls(block_size, disk_size, full_id.rstrip(b"\0").decode(), bid.rstrip(b"\0").decode(), bytearray(bits))
