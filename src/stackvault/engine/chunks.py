"""Chunk encoding: how one block's bytes are kept in the repository.

A chunk's id is the BLAKE3 digest of the block's plain bytes (keyed BLAKE3 in an encrypted
repository: `Repository.hash_block`), so identical blocks anywhere (another disk, another backup)
are stored once. The object is `b"SVC1"`, one codec byte, then the payload:
codec 0 keeps the block as is, codec 1 is zstd. Compression is skipped when it would not save at least
1/32 of the block (random data, already compressed files): decompressing then costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import blake3
import zstandard

from ..errors import CorruptChunkError

MAGIC = b"SVC1"
CODEC_NONE = 0
CODEC_ZSTD = 1

_local = threading.local()


def hash_block(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; each worker thread keeps its own (borg does the same).
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(level=level)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
    return dec


def encode_chunk(data: bytes | memoryview, level: int) -> bytes:
    if level > 0:
        packed = _compressor(level).compress(data)
        if len(packed) <= len(data) - (len(data) >> 5):
            return MAGIC + bytes((CODEC_ZSTD,)) + packed
    return MAGIC + bytes((CODEC_NONE,)) + bytes(data)


def _decompress(hexid: str, payload: memoryview, expected_length: int | None) -> bytes:
    """One zstd frame and nothing after it, never more than its recorded content size (at most
    `expected_length`) in memory: bytes appended to a chunk are damage, not padding."""
    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(hexid, f"does not decompress ({exc})") from None
    if size < 0 or (expected_length is not None and size != expected_length):
        raise CorruptChunkError(hexid, f"its frame claims {size} bytes, expected {expected_length}")
    dec = _decompressor().decompressobj()
    try:
        data = dec.decompress(payload)
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(hexid, f"does not decompress ({exc})") from None
    if not dec.eof:
        raise CorruptChunkError(hexid, "truncated zstd frame")
    if dec.unused_data:
        raise CorruptChunkError(hexid, f"{len(dec.unused_data)} bytes follow its data")
    return data


def decode_chunk(digest: bytes, blob: bytes, expected_length: int | None = None,
                 hasher: Callable[[bytes], bytes] | None = None) -> bytes:
    """Plain bytes of a chunk, checked against its id (made by `hasher`): damaged data is never returned."""
    hexid = digest.hex()
    if len(blob) < 5 or blob[:4] != MAGIC:
        raise CorruptChunkError(hexid, "bad header")
    codec = blob[4]
    if codec == CODEC_NONE:
        data = blob[5:]
    elif codec == CODEC_ZSTD:
        data = _decompress(hexid, memoryview(blob)[5:], expected_length)
    else:
        raise CorruptChunkError(hexid, f"unknown codec {codec}")
    if expected_length is not None and len(data) != expected_length:
        raise CorruptChunkError(hexid, f"holds {len(data)} bytes, expected {expected_length}")
    if (hasher or hash_block)(data) != digest:
        raise CorruptChunkError(hexid, "content does not match its hash")
    return data
