"""Pack files and chunk indexes as bytes: what a reader accepts, what it refuses, what it costs."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from stackvault.engine.crypto import ObjectAuthError, RepositoryCipher
from stackvault.engine.layout import pack_key
from stackvault.engine.packs import (
    RECORD,
    ChunkIndex,
    Location,
    PackFormatError,
    check_pack,
    read_header,
    seal_pack,
)
from stackvault.storage.memory import MemoryBackend


def _chunks(n: int, size: int = 1000) -> list[tuple[bytes, bytes]]:
    return [(os.urandom(32), os.urandom(size + i)) for i in range(n)]


def build_pack(chunks: list[tuple[bytes, bytes]], cipher: RepositoryCipher | None) -> tuple[bytes, bytes, list]:
    """A pack of `chunks` as the backup's pack writer makes one: (pack id, bytes, header entries)."""
    body, listed = bytearray(), []
    for digest, blob in chunks:
        listed.append((digest, len(body), len(blob)))
        body += blob
    pack_id = seal_pack(body, listed, cipher)
    return pack_id, bytes(body), listed


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_pack_lists_its_chunks_and_its_header_is_read_with_two_ranges(encrypted: bool) -> None:
    cipher = RepositoryCipher(os.urandom(32)) if encrypted else None
    chunks = _chunks(5)
    pack_id, data, listed = build_pack(chunks, cipher)
    store = MemoryBackend()
    store.put(pack_key(pack_id), data)
    assert read_header(store, pack_id, len(data), cipher) == listed == check_pack(data, pack_id, cipher)
    for (digest, blob), (listed_id, offset, length) in zip(chunks, listed, strict=True):
        assert listed_id == digest and data[offset : offset + length] == blob
    if encrypted:
        assert len(data) % 4096 == 40 and listed[-1][1] + listed[-1][2] <= len(data) - 4096 - 40


def test_a_pack_whose_bytes_or_header_changed_is_refused() -> None:
    pack_id, data, _ = build_pack(_chunks(3), None)
    flipped = bytearray(data)
    flipped[10] ^= 1
    with pytest.raises(PackFormatError, match="do not match its name"):
        check_pack(bytes(flipped), pack_id, None)
    with pytest.raises(PackFormatError, match="no pack trailer"):
        check_pack(data[:-1], pack_id, None)
    # a header entry pointing past the chunks
    tampered = bytearray(data)
    at = len(data) - 8 - 44  # last entry; its offset field follows the 32-byte id
    tampered[at + 32 : at + 40] = (len(data)).to_bytes(8, "little")
    with pytest.raises(PackFormatError, match="outside the pack"):
        check_pack(bytes(tampered), pack_id, None)


def test_an_encrypted_header_moved_to_another_pack_fails_authentication() -> None:
    cipher = RepositoryCipher(os.urandom(32))
    _, a, _ = build_pack(_chunks(2), cipher)
    b_id, b, _ = build_pack(_chunks(2), cipher)
    a_header_len = int.from_bytes(a[-8:-4], "little")
    b_header_len = int.from_bytes(b[-8:-4], "little")
    swapped = b[: len(b) - 8 - b_header_len] + a[len(a) - 8 - a_header_len :]
    with pytest.raises(ObjectAuthError):
        check_pack(swapped, b_id, cipher)


def test_indexes_merge_find_every_chunk_and_refuse_damage() -> None:
    pack_a, pack_b = os.urandom(32), os.urandom(32)
    shared = os.urandom(32)
    first = ChunkIndex.of_entries([(os.urandom(32), Location(pack_a, i * 10, 10)) for i in range(50)]
                                  + [(shared, Location(pack_a, 999, 5))])
    second = ChunkIndex.of_entries([(os.urandom(32), Location(pack_b, i * 10, 10)) for i in range(50)]
                                   + [(shared, Location(pack_b, 7, 5))])
    merged = ChunkIndex.merged([first, second])
    assert len(merged) == 101, "a chunk in two packs is listed once"
    for part in (first, second):
        for digest, loc in part:
            if digest != shared:
                assert merged.lookup(digest) == loc
    assert merged.lookup(shared) in (Location(pack_a, 999, 5), Location(pack_b, 7, 5))
    assert merged.lookup(os.urandom(32)) is None
    index_id, data = merged.to_bytes()
    again = ChunkIndex.from_bytes(data, "index/x")
    assert list(again) == list(merged) and index_id == data[-32:]
    with pytest.raises(PackFormatError, match="checksum"):
        ChunkIndex.from_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:], "index/x")
    with pytest.raises(PackFormatError, match="length"):
        ChunkIndex.from_bytes(data[:-1], "index/x")


def test_an_index_in_memory_costs_under_50_bytes_a_chunk() -> None:
    """What the bounded-memory claim of docs/repository-format.md rests on: 44 bytes a chunk."""
    n = 200_000
    packs = [os.urandom(32) for _ in range(n // 50)]
    records = b"".join(sorted(RECORD.pack(os.urandom(32), i // 50, 0, 1) for i in range(n)))
    data = ChunkIndex(packs, records).to_bytes()[1]
    del records
    tracemalloc.start()
    try:
        loaded = ChunkIndex.from_bytes(data, "index/x")
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(loaded) == n
    assert held / n < 50, f"{held / n:.1f} bytes a chunk"
