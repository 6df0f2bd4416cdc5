"""Property-based fuzzing of the decoders of bytes the store hands back: the block index and the
backup record. Whatever the bytes, a decoder returns a value or raises its documented error, and it
never allocates much more than the input (tracemalloc), so a planted object cannot crash or exhaust
the proxy. A small fixed budget runs in the default tier, a long one in the slow tier."""

from __future__ import annotations

import json
import struct
import tracemalloc

import blake3
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackvault.engine.blockindex import HEADER, HEADER_V1, MAGIC, MAGIC_V1, BlockIndex, IndexFormatError
from stackvault.engine.crypto import canonical_checksum
from stackvault.engine.manifest import BackupRecord, DiskRecord, RecordFormatError
from stackvault.errors import RepositoryError

QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BACKUP_ID = "20261201T000000000Z-abcdef"
#: What a decoder may hold beyond its input: a copy of it and some bookkeeping.
SLACK = 1 << 20


def bounded(decode, data: bytes):
    """Run `decode(data)` and check its peak Python memory stays within a few copies of the input."""
    tracemalloc.start()
    try:
        return decode(data)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= 8 * len(data) + SLACK, f"decoding {len(data)} bytes peaked at {peak} bytes"


# -- block index ----------------------------------------------------------------------------------

#: The geometry the backup record gives (1 GiB of 64 KiB blocks): what a decoder is told to expect.
RECORD_SIZE, RECORD_BS = 1 << 30, 65536


def _index_with(block_size: int, disk_size: int, blocks: int, bid: bytes, runs: int, data: int, body: bytes,
                framed: bool) -> bytes:
    """An `SVFIDX02` index whose header checksum and body checksum hold, so the fields behind them are
    what gets fuzzed (a store can forge both, they are no authentication); the body is a zstd frame
    of `body`, or `body` as it is."""
    head = HEADER.pack(MAGIC, block_size, 0, disk_size, blocks, bid, runs, data, blake3.blake3(body).digest())
    frame = zstandard.ZstdCompressor().compress(body) if framed else body
    return head + blake3.blake3(head).digest()[:16] + frame


def _v1_index_with(block_size: int, disk_size: int, blocks: int, bid: bytes, body: bytes) -> bytes:
    head = HEADER_V1.pack(MAGIC_V1, block_size, 0, disk_size, blocks, bid, blake3.blake3(body).digest())
    return head + blake3.blake3(head).digest()[:16] + body


u32 = st.integers(0, 2**32 - 1)
u64 = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 1 << 24))
small = st.integers(0, 8)
block_sizes = u32 | st.sampled_from([0, 1, 512, 65536])
bodies = st.lists(st.integers(0, 40) | u64, max_size=12).map(lambda v: struct.pack(f"<{len(v)}Q", *v)) \
    | st.binary(max_size=256)
forged_indexes = st.builds(_index_with, block_sizes, u64 | st.just(RECORD_SIZE), u64 | small | st.just(16384),
                           st.binary(min_size=48, max_size=48), u64 | small, u64 | small, bodies, st.booleans())
forged_v1_indexes = st.builds(_v1_index_with, block_sizes, u64, u64 | small, st.binary(min_size=48, max_size=48),
                              st.binary(max_size=256).map(lambda b: b[: len(b) // 32 * 32]))


def _decode_index(data: bytes) -> None:
    for geometry in ((), (RECORD_SIZE, RECORD_BS)):
        try:
            index = bounded(lambda d, g=geometry: BlockIndex.from_bytes(d, *g), data)
        except IndexFormatError:
            continue
        assert index.data_count <= index.blocks
        index.chunk_ids()  # what gc and verify do with it next
        assert BlockIndex.from_bytes(index.to_bytes()) == index


def _index_cases(strategy):
    return st.one_of(st.binary(max_size=512), strategy,
                     strategy.map(lambda b: b[: len(b) // 2]), strategy.map(lambda b: b + b"\0"))


@QUICK
@given(_index_cases(forged_indexes | forged_v1_indexes))
def test_block_index_decoder_quick(data: bytes) -> None:
    _decode_index(data)


@pytest.mark.slow
@LONG
@given(_index_cases(forged_indexes | forged_v1_indexes))
def test_block_index_decoder_long(data: bytes) -> None:
    _decode_index(data)


@pytest.mark.parametrize("forge", [_index_with, _v1_index_with])
def test_block_index_zero_block_size_is_a_format_error(forge) -> None:
    """Was a ZeroDivisionError: a header claiming block size 0."""
    extra = (0, 0, b"", True) if forge is _index_with else (b"",)
    with pytest.raises(IndexFormatError):
        BlockIndex.from_bytes(forge(0, 4096, 0, b"\0" * 48, *extra))


@pytest.mark.parametrize("forge", [_index_with, _v1_index_with])
def test_block_index_non_ascii_backup_id_is_a_format_error(forge) -> None:
    """Was a UnicodeDecodeError."""
    extra = (0, 0, b"", True) if forge is _index_with else (b"",)
    with pytest.raises(IndexFormatError):
        BlockIndex.from_bytes(forge(65536, 0, 0, b"\xff" * 48, *extra))


# -- backup record --------------------------------------------------------------------------------

def _valid_doc() -> dict:
    disk = DiskRecord(position=0, name="disk", disk_key="file:/x", size=1 << 20, block_size=65536, level="full",
                      index=f"indexes/{BACKUP_ID}/0.fidx", index_checksum="ab" * 32, full_backup_id=BACKUP_ID)
    record = BackupRecord(backup_id=BACKUP_ID, created="2026-12-01T00:00:00+00:00",
                          finished="2026-12-01T00:00:01+00:00", level="full", requested_level="full", status="success",
                          disks=[disk])
    return json.loads(record.to_json())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=4),
                           max_leaves=20)


@st.composite
def mutated_records(draw) -> bytes:
    """A valid record with one field (of the record or of its disk) replaced, deleted or added, and
    its checksum recomputed or not: the checks behind the checksum get exercised too."""
    doc = _valid_doc()
    target = draw(st.sampled_from(["record", "disk"]))
    obj = doc if target == "record" else doc["disks"][0]
    key = draw(st.sampled_from(sorted(obj)) | st.text(max_size=8))
    if draw(st.booleans()):
        obj.pop(key, None)
    else:
        obj[key] = draw(json_values)
    doc.pop("checksum", None)
    if draw(st.booleans()):
        doc["checksum"] = canonical_checksum(doc)
    return json.dumps(doc).encode()


def _decode_record(data: bytes) -> None:
    try:
        record = bounded(lambda d: BackupRecord.from_json(d, BACKUP_ID), data)
    except (RecordFormatError, RepositoryError):
        return
    # what list, prune and restore then compute from it must work too
    assert record.backup_id == BACKUP_ID and record.disks
    assert record.size >= 0 and record.bytes_stored >= 0
    assert all(d.block_size > 0 and d.index.startswith(f"indexes/{BACKUP_ID}/") for d in record.disks)


record_cases = st.one_of(st.binary(max_size=512), json_values.map(lambda v: json.dumps(v).encode()),
                         mutated_records(), mutated_records().map(lambda b: b[: len(b) // 2]))


@QUICK
@given(record_cases)
def test_backup_record_decoder_quick(data: bytes) -> None:
    _decode_record(data)


@pytest.mark.slow
@LONG
@given(record_cases)
def test_backup_record_decoder_long(data: bytes) -> None:
    _decode_record(data)


@pytest.mark.parametrize("data", [b"[" * 200_000, b'{"a":' * 100_000, b"\xff\xfe", b"null", b"1e999999"])
def test_backup_record_decoder_hostile_shapes(data: bytes) -> None:
    """Deep nesting was a RecursionError, a non-object an AttributeError."""
    with pytest.raises(RecordFormatError):
        bounded(BackupRecord.from_json, data)


def test_valid_record_round_trips_and_binds_its_id() -> None:
    data = json.dumps(_valid_doc()).encode()
    assert BackupRecord.from_json(data, BACKUP_ID).checked
    with pytest.raises(RecordFormatError, match="names backup"):
        BackupRecord.from_json(data, "20261201T000000000Z-aaaaaa")


def test_record_without_checksum_is_read_as_unchecked() -> None:
    """Records of older versions (format version 1) have no checksum: still read, and marked."""
    doc = _valid_doc()
    del doc["checksum"]
    doc["version"] = 1
    assert not BackupRecord.from_json(json.dumps(doc).encode(), BACKUP_ID).checked


def test_record_decoder_refuses_a_huge_object_without_parsing_it() -> None:
    data = b" " * (65 << 20)
    with pytest.raises(RecordFormatError, match="far more"):
        bounded(BackupRecord.from_json, data)


def test_struct_layout_unchanged() -> None:
    assert HEADER.size == 128 and HEADER_V1.size == 112 and struct.calcsize("<8sII") == 16
