"""Block index, change bitmap and chunk encoding: round trips and the damage they must detect."""

import os

import pytest

from stackvault.engine.bitmap import ChangeBitmap
from stackvault.engine.blockindex import ZERO_DIGEST, BlockIndex, IndexBuilder, IndexFormatError
from stackvault.engine.chunks import decode_chunk, encode_chunk, hash_block
from stackvault.errors import CorruptChunkError


def sample_index() -> BlockIndex:
    builder = IndexBuilder(10 * 65536 + 100, 65536, "20261201T000000Z-abcdef")
    for i in range(0, 11, 2):
        builder.add(i, hash_block(bytes([i]) * 10))
    return builder.finish()


def test_index_round_trip_and_last_block_length():
    idx = sample_index()
    back = BlockIndex.from_bytes(idx.to_bytes())
    assert back == idx
    assert back.blocks == 11 and back.block_length(10) == 100
    assert back.digest(1) == ZERO_DIGEST and len(back.chunk_ids()) == 6


@pytest.mark.parametrize("where", [0, 20, 40, 90, 120, 140, 200, -1])
def test_index_detects_any_flipped_byte(where):
    data = bytearray(sample_index().to_bytes())
    data[where] ^= 0x01
    with pytest.raises(IndexFormatError):
        BlockIndex.from_bytes(bytes(data))


def test_index_detects_truncation():
    with pytest.raises(IndexFormatError):
        BlockIndex.from_bytes(sample_index().to_bytes()[:-32])


def test_bitmap_round_trip_and_damage():
    bmp = ChangeBitmap.empty(100 * 65536, 65536, "full-id", "last-id")
    for i in (0, 7, 8, 99):
        bmp.set(i)
    back = ChangeBitmap.from_bytes(bmp.to_bytes())
    assert [i for i in range(100) if back[i]] == [0, 7, 8, 99] and back.count() == 4
    assert (back.full_backup_id, back.backup_id) == ("full-id", "last-id")
    data = bytearray(bmp.to_bytes())
    data[-1] ^= 0x10
    with pytest.raises(IndexFormatError):
        ChangeBitmap.from_bytes(bytes(data))


@pytest.mark.parametrize("data", [b"text " * 20000, os.urandom(65536), b"\x01" + bytes(65535)])
def test_chunk_round_trip(data):
    digest = hash_block(data)
    blob = encode_chunk(data, 3)
    assert decode_chunk(digest, blob, len(data)) == data


def test_incompressible_chunk_is_stored_plain():
    data = os.urandom(65536)
    assert encode_chunk(data, 3)[4] == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_damaged_chunk_is_never_returned(damage):
    data = b"some compressible data " * 3000
    digest = hash_block(data)
    blob = bytearray(encode_chunk(data, 3))
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    elif damage == "truncate":
        del blob[-10:]
    else:
        blob[0:4] = b"XXXX"
    with pytest.raises(CorruptChunkError) as err:
        decode_chunk(digest, bytes(blob), len(data))
    assert digest.hex() in str(err.value)
