"""The sparse block index (`SVFIDX02`) and change bitmap (`SVBMP002`): round trips, what older versions
wrote still read, and the damage or forgery a store can hand back refused as IndexFormatError without
exhausting memory (docs/repository-format.md, "Block index").
"""

from __future__ import annotations

import struct
import tracemalloc

import blake3
import pytest
import zstandard

from stackvault.engine.bitmap import ChangeBitmap
from stackvault.engine.blockindex import (
    HEADER,
    MAGIC,
    ZERO_DIGEST,
    BlockIndex,
    IndexBuilder,
    IndexFormatError,
    differing_blocks,
    max_stored_size,
)

BS = 512 << 10
TIB = 1 << 40
BID = "20261201T000000000Z-abcdef"


def digest(i: int) -> bytes:
    return blake3.blake3(i.to_bytes(8, "little")).digest()


def sparse_index(size: int = 16 * TIB, at: tuple[int, ...] = (0, 1, 2, 1000, 1001, 5_000_000)) -> BlockIndex:
    builder = IndexBuilder(size, BS, BID)
    for i in sorted(at):
        builder.add(i, digest(i))
    return builder.finish()


def runs(index: BlockIndex) -> list[tuple[int, int]]:
    """(first, end) of the runs of data blocks, as the index's data blocks show them."""
    out: list[tuple[int, int]] = []
    for i, _ in index.data_blocks():
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def test_a_16_tib_disk_holding_six_blocks_has_an_index_of_a_few_hundred_bytes():
    index = sparse_index()
    data = index.to_bytes()
    assert len(data) < 600
    back = BlockIndex.from_bytes(data, 16 * TIB, BS)
    assert back == index and back.checksum() == index.checksum() == blake3.blake3(
        struct.pack("<6Q", 0, 3, 1000, 2, 5_000_000, 1) + b"".join(digest(i) for i in (0, 1, 2, 1000, 1001, 5_000_000))
    ).digest(), "the checksum is BLAKE3 of the body: the runs table, then the digests"
    assert runs(back) == [(0, 3), (1000, 1002), (5_000_000, 5_000_001)]
    assert back.blocks == 32 << 20 and back.data_count == 6
    assert back.digest(1001) == digest(1001) and back.digest(3) == back.digest(999) == ZERO_DIGEST
    assert list(back.data_blocks(2, 1001)) == [(2, digest(2)), (1000, digest(1000))]
    assert back.chunk_ids() == {digest(i) for i in (0, 1, 2, 1000, 1001, 5_000_000)}


def test_zero_digests_are_left_out_and_blocks_must_come_in_order():
    builder = IndexBuilder(10 * BS, BS, BID)
    builder.add(0, digest(0))
    builder.add(1, ZERO_DIGEST)
    builder.add(2, digest(2))
    assert runs(builder.finish()) == [(0, 1), (2, 3)]
    with pytest.raises(ValueError):
        builder.add(2, digest(2))
    with pytest.raises(ValueError):
        builder.add(10, digest(10))


def test_an_empty_disk_and_a_full_one_round_trip():
    empty = IndexBuilder(TIB, BS, BID).finish()
    assert BlockIndex.from_bytes(empty.to_bytes()) == empty and empty.data_count == 0
    full = sparse_index(100 * BS + 7, tuple(range(101)))
    back = BlockIndex.from_bytes(full.to_bytes(), 100 * BS + 7, BS)
    assert runs(back) == [(0, 101)] and back.block_length(100) == 7


def test_differing_blocks_walk_only_the_data_of_both():
    a = sparse_index(at=(1, 2, 3, 4_000_000))
    builder = IndexBuilder(16 * TIB, BS, BID)
    for i in (2, 3, 7):
        builder.add(i, digest(i) if i != 3 else digest(33))
    b = builder.finish()
    assert list(differing_blocks(a, b)) == [1, 3, 7, 4_000_000]
    assert list(differing_blocks(a, b, 2, 5)) == [3]


# -- what older versions wrote ---------------------------------------------------------------------

V1_HEADER = struct.Struct("<8sII QQ 48s 32s")


def v1_bytes(disk_size: int, block_size: int, backup_id: str, dense: bytes) -> bytes:
    """An index as versions before the sparse format wrote it (their writer, unchanged): 32 bytes for
    every block, zeros for a zero block."""
    blocks = -(-disk_size // block_size)
    head = V1_HEADER.pack(b"SVFIDX01", block_size, 0, disk_size, blocks, backup_id.encode("ascii"),
                          blake3.blake3(dense).digest())
    head += blake3.blake3(head).digest()[:16]
    return head + dense


def test_a_dense_index_of_an_older_version_is_read_and_keeps_its_checksum():
    # A zero digest's neighbours end and start with zero bytes: runs are found at 32-byte boundaries.
    odd = bytes(31) + b"\x01"
    dense = digest(0) + ZERO_DIGEST + odd + b"\x01" + bytes(31) + ZERO_DIGEST * 3 + digest(7) + ZERO_DIGEST
    index = BlockIndex.from_bytes(v1_bytes(9 * 65536 - 5, 65536, BID, dense), 9 * 65536 - 5, 65536)
    assert index.checksum() == blake3.blake3(dense).digest(), "the record names the dense checksum"
    assert runs(index) == [(0, 1), (2, 4), (7, 8)]
    assert index.digest(2) == odd and index.digest(3) == b"\x01" + bytes(31) and index.digest(1) == ZERO_DIGEST
    assert index.backup_id == BID and index.block_length(8) == 65536 - 5
    rewritten = BlockIndex.from_bytes(index.to_bytes())
    assert rewritten == index and rewritten.checksum() != index.checksum(), "written anew, it is SVFIDX02"


@pytest.mark.parametrize("damage", ["flip", "truncate", "extra", "geometry"])
def test_a_damaged_dense_index_is_refused(damage):
    data = bytearray(v1_bytes(4 * 65536, 65536, BID, digest(0) + ZERO_DIGEST * 2 + digest(3)))
    size = 4 * 65536
    if damage == "flip":
        data[-1] ^= 1
    elif damage == "truncate":
        del data[-32:]
    elif damage == "extra":
        data += b"\0" * 32
    else:
        size *= 2
    with pytest.raises(IndexFormatError):
        BlockIndex.from_bytes(bytes(data), size, 65536)


def test_a_bitmap_of_an_older_version_is_read_as_runs():
    blocks = 70
    bits = bytearray(9)
    for i in (0, 1, 2, *range(8, 24), 40, 69):
        bits[i // 8] |= 1 << (i % 8)
    head = struct.pack("<8sII QQ 48s 48s", b"SVBMP001", 65536, 0, blocks * 65536, blocks, b"full", b"last")
    bitmap = ChangeBitmap.from_bytes(head + blake3.blake3(head + bytes(bits)).digest()[:16] + bytes(bits))
    assert list(bitmap.runs()) == [(0, 3), (8, 24), (40, 41), (69, 70)] and bitmap.count() == 21
    assert (bitmap.full_backup_id, bitmap.backup_id) == ("full", "last")
    assert ChangeBitmap.from_bytes(bitmap.to_bytes()) == bitmap


def test_a_bitmap_of_a_huge_disk_is_a_few_runs():
    every = ChangeBitmap.every(16 * TIB, BS, "full", "last")
    assert len(every.to_bytes()) < 200 and every.count() == 32 << 20
    some = ChangeBitmap.empty(16 * TIB, BS)
    some.set(5)
    assert list(some.union(every).runs()) == [(0, 32 << 20)]


@pytest.mark.parametrize("runs", [[(3, 2), (4, 1)], [(3, 2), (5, 1)], [(5, 1), (3, 1)], [(9, 2)], [(2, 0)]],
                         ids=["overlapping", "touching", "out of order", "past the end", "empty"])
def test_a_bitmap_with_bad_runs_is_refused(runs):
    blocks = 10
    table = b"".join(struct.pack("<QQ", s, c) for s, c in runs)
    head = struct.pack("<8sII QQ 48s 48s Q", b"SVBMP002", 65536, 0, blocks * 65536, blocks, b"f", b"l", len(runs))
    with pytest.raises(IndexFormatError):
        ChangeBitmap.from_bytes(head + blake3.blake3(head + table).digest()[:16] + table)


# -- what a hostile store can hand back ------------------------------------------------------------

def forge(runs: list[tuple[int, int]], digests: bytes | None = None, *, disk: int = 64 * BS, bs: int = BS,
          nruns: int | None = None, ndata: int | None = None, body: bytes | None = None,
          frame: bytes | None = None) -> bytes:
    """An SVFIDX02 index with whatever fields are given, its checksums made to hold (a store can)."""
    if digests is None:
        digests = b"".join(digest(s + k) for s, c in runs for k in range(c))
    if body is None:
        body = b"".join(struct.pack("<QQ", s, c) for s, c in runs) + digests
    nruns = len(runs) if nruns is None else nruns
    ndata = len(digests) // 32 if ndata is None else ndata
    head = HEADER.pack(MAGIC, bs, 0, disk, -(-disk // bs), BID.encode(), nruns, ndata, blake3.blake3(body).digest())
    if frame is None:
        frame = zstandard.ZstdCompressor().compress(body)
    return head + blake3.blake3(head).digest()[:16] + frame


def refused(data: bytes, disk: int = 64 * BS, bs: int = BS) -> str:
    """The IndexFormatError `data` raises, decoding it within a few MiB of memory."""
    tracemalloc.start()
    try:
        with pytest.raises(IndexFormatError) as err:
            BlockIndex.from_bytes(data, disk, bs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data) + (1 << 20), f"refusing {len(data)} bytes took {peak} bytes"
    return str(err.value)


def test_a_forged_index_that_holds_together_is_read():
    assert runs(BlockIndex.from_bytes(forge([(0, 2), (10, 1)]), 64 * BS, BS)) == [(0, 2), (10, 11)]


@pytest.mark.parametrize("runs,words", [
    ([(0, 4), (2, 3)], "out of order"),
    ([(0, 2), (2, 2)], "touching"),
    ([(10, 1), (0, 2)], "out of order"),
    ([(60, 5)], "past the disk"),
    ([(63, 1), (1 << 63, 1 << 63)], "past the disk"),
    ([(5, 0), (9, 2)], "empty"),
])
def test_runs_out_of_order_overlapping_or_past_the_end_are_refused(runs, words):
    count = max(len(runs), min(64, sum(c for _, c in runs)))  # what the header can claim
    assert words in refused(forge(runs, b"".join(digest(k) for k in range(count))))


@pytest.mark.parametrize("fields,words", [
    ({"ndata": 65}, "claims"),  # more data blocks than the disk has
    ({"nruns": 33, "ndata": 64}, "claims"),  # more runs than fit apart in 64 blocks
    ({"nruns": 0}, "claims"),
    ({"ndata": 3}, "body claims"),  # the frame holds another size than the header says
    ({"ndata": 1 << 60}, "claims"),
    ({"bs": 3 << 20}, "block size"),
    ({"bs": 256}, "block size"),
])
def test_header_fields_that_do_not_hold_together_are_refused(fields, words):
    assert words in refused(forge([(0, 2)], **fields), bs=fields.get("bs", BS))


def test_an_index_of_another_geometry_than_its_record_is_refused_before_decompressing():
    assert "not the record's" in refused(forge([(0, 2)], disk=128 * BS))
    assert "not the record's" in refused(forge([(0, 2)]), bs=65536)


def test_a_decompression_bomb_is_refused_before_its_memory_is_taken():
    """A 64 MiB body of 2 million repeated digests compresses to a few KiB; its header is
    consistent with a disk far larger than the record's, so it is refused on the geometry, and told
    the record's geometry it is refused without decompressing."""
    n = 2 << 20
    packer = zstandard.ZstdCompressor(level=19).compressobj(size=16 + 32 * n)
    frame = packer.compress(struct.pack("<QQ", 0, n)) + b"".join(packer.compress(b"\x01" * (32 << 16))
                                                                  for _ in range(n >> 16)) + packer.flush()
    assert len(frame) < 64 << 10
    disk = n * BS
    bomb = forge([(0, n)], b"", disk=disk, ndata=n, body=b"", frame=frame)
    assert "not the record's" in refused(bomb)  # record: a 64-block disk
    # A frame whose size field understates what it holds: decompressed into a buffer of the claim.
    small = bytearray(frame)
    fhd = small[4]
    assert fhd >> 6 == 2 and not fhd & 3, "a 4-byte content size field, no dictionary id"
    at = 5 + (0 if fhd & 0x20 else 1)
    small[at : at + 4] = struct.pack("<I", 16 + 32 * 64)
    assert refused(forge([(0, 64)], b"", ndata=64, body=b"", frame=bytes(small)))


@pytest.mark.parametrize("damage", ["truncated", "extra", "no frame", "body checksum", "zero digest", "no size"])
def test_a_damaged_body_is_refused(damage):
    good = forge([(0, 2), (10, 1)])
    if damage == "truncated":
        data = good[:-5]
    elif damage == "extra":
        data = good + b"\0"
    elif damage == "no frame":
        data = good[: HEADER.size + 16]
    elif damage == "body checksum":
        body = struct.pack("<QQ", 0, 1) + digest(0)
        data = forge([(0, 1)], frame=zstandard.ZstdCompressor().compress(body[:-1] + b"\xfe"))
    elif damage == "zero digest":
        data = forge([(0, 2)], digest(0) + ZERO_DIGEST)
    else:
        body = struct.pack("<QQ", 0, 1) + digest(0)
        data = forge([(0, 1)], frame=zstandard.ZstdCompressor(write_content_size=False).compress(body))
    refused(data)


def test_an_object_larger_than_any_index_of_its_record_is_not_read():
    """The store's announced size is checked against this bound before the object is read."""
    assert max_stored_size(16 * TIB, BS) > 32 * (32 << 20) and max_stored_size(BS, BS) < 2048
