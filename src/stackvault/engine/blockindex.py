"""The fixed block index: every block's digest for one disk in one backup.

The same binary format serves as a disk's manifest in the repository and as its `<disk>.sha`
working-state file, so the state is a byte-for-byte cache of the newest manifest (as Proxmox Backup
Server's fixed index). Layout, little endian:

    0   8  magic  b"SVFIDX01"
    8   4  block size
    12  4  reserved (0)
    16  8  disk size in bytes
    24  8  number of blocks
    32 48  backup id, ASCII, NUL padded
    80 32  BLAKE3 of all digests (integrity of the body)
    112 16 BLAKE3 of bytes 0..112, first 16 bytes (integrity of the header)
    128    digests, 32 bytes each; 32 zero bytes mean an all-zero block (never stored)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import blake3

MAGIC = b"SVFIDX01"
HEADER = struct.Struct("<8sII QQ 48s 32s")
HEADER_SIZE = 128
DIGEST_SIZE = 32
ZERO_DIGEST = bytes(DIGEST_SIZE)


class IndexFormatError(ValueError):
    """The bytes are not an intact block index (truncated, bit rot, other file)."""


def block_count(disk_size: int, block_size: int) -> int:
    return -(-disk_size // block_size)


@dataclass
class BlockIndex:
    block_size: int
    disk_size: int
    backup_id: str
    digests: bytearray

    @classmethod
    def empty(cls, disk_size: int, block_size: int, backup_id: str = "") -> BlockIndex:
        return cls(block_size, disk_size, backup_id, bytearray(block_count(disk_size, block_size) * DIGEST_SIZE))

    @property
    def blocks(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def digest(self, i: int) -> bytes:
        return bytes(self.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])

    def set_digest(self, i: int, digest: bytes) -> None:
        self.digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] = digest

    def block_length(self, i: int) -> int:
        return min(self.block_size, self.disk_size - i * self.block_size)

    def chunk_ids(self) -> set[bytes]:
        """The distinct non-zero digests: the chunks this disk needs."""
        return {digest for _, digest in self.data_blocks()}

    def data_blocks(self) -> Iterator[tuple[int, bytes]]:
        """(block number, digest) of every block that is not all zeros, in disk order."""
        view = memoryview(self.digests)
        for i in range(self.blocks):
            digest = bytes(view[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
            if digest != ZERO_DIGEST:
                yield i, digest

    def checksum(self) -> bytes:
        return blake3.blake3(self.digests).digest()

    def to_bytes(self) -> bytes:
        bid = self.backup_id.encode("ascii")
        if len(bid) > 48:
            raise ValueError(f"backup id too long: {self.backup_id}")
        head = HEADER.pack(MAGIC, self.block_size, 0, self.disk_size, self.blocks, bid, self.checksum())
        head += blake3.blake3(head).digest()[:16]
        return head + bytes(self.digests)

    @classmethod
    def from_bytes(cls, data: bytes) -> BlockIndex:
        """The index in `data`; raises only IndexFormatError, and holds no more than a copy of `data`."""
        if len(data) < HEADER_SIZE or data[:8] != MAGIC:
            raise IndexFormatError("not a stackvault block index (bad magic or too short)")
        head = data[: HEADER.size]
        if blake3.blake3(head).digest()[:16] != data[HEADER.size : HEADER_SIZE]:
            raise IndexFormatError("block index header checksum mismatch")
        _magic, block_size, _res, disk_size, blocks, bid, body_sum = HEADER.unpack(head)
        # The header checksum is no authentication: a store can forge it, so every field is checked.
        if block_size < 512 or block_size & (block_size - 1):
            raise IndexFormatError(f"block index has an invalid block size {block_size}")
        if len(data) - HEADER_SIZE != blocks * DIGEST_SIZE or blocks != block_count(disk_size, block_size):
            raise IndexFormatError("block index is truncated or has the wrong length")
        try:
            backup_id = bid.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise IndexFormatError("block index names no valid backup id") from None
        digests = bytearray(data[HEADER_SIZE:])
        if blake3.blake3(digests).digest() != body_sum:
            raise IndexFormatError("block index body checksum mismatch")
        return cls(block_size, disk_size, backup_id, digests)
