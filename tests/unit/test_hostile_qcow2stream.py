"""A tenant's qcow2 image (from Glance) parsed by the stream reader: whatever its header and tables
say, the reader either gives guest bytes or refuses with a `SourceError`, within fixed memory and
time. Crafted images are built byte by byte here (qemu-img writes no hostile ones); the reader is
also fuzzed with generated tables and with mutated images that qemu-img made."""

from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from stackvault.engine.qcow2stream import HEAD_SIZE, ImageRefused, Qcow2StreamSource, Qcow2Unsupported, parse_header
from stackvault.errors import SourceError

KiB, MiB = 1 << 10, 1 << 20
COPIED = 1 << 63  # QCOW_OFLAG_COPIED, set on entries of images qemu writes
COMPRESSED = 1 << 62
ZSTD_BIT = 1 << 3


def image(size: int, l1: list[int], clusters: dict[int, bytes], *, cluster_bits: int = 16, zstd: bool = False,
          backing: bool = False, data_file: bool = False, l1_size: int | None = None) -> bytes:
    """A qcow2 v3 file: the header in cluster 0, the L1 table at cluster 1, `clusters` at their offsets."""
    cs = 1 << cluster_bits
    incompatible = (ZSTD_BIT if zstd else 0) | (4 if data_file else 0)
    header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0x1000 if backing else 0, 8 if backing else 0,
                         cluster_bits, size, 0, len(l1) if l1_size is None else l1_size, cs, 0, 0, 0, 0,
                         incompatible, 0, 0, 4, 112)
    header += bytes((1 if zstd else 0,)) + bytes(7)
    out = bytearray(header.ljust(cs, b"\0"))
    out += b"".join(struct.pack(">Q", e) for e in l1)
    for off, data in sorted(clusters.items()):
        if len(out) < off:
            out += bytes(off - len(out))
        out[off:off + len(data)] = data
    return bytes(out)


def l2(entries: list[int], cs: int = 64 * KiB) -> bytes:
    return b"".join(struct.pack(">Q", e) for e in entries).ljust(cs, b"\0")


def read_all(data: bytes, *, memory_limit: int = 8 * MiB, block: int = 256 * KiB) -> tuple[bytes, Qcow2StreamSource]:
    """Read the image the engine's way: extents, blocks in guest order (data only), then finish()."""
    stream = io.BytesIO(data)
    head = stream.read(HEAD_SIZE)
    source = Qcow2StreamSource(path="hostile.qcow2", name="hostile.qcow2", key="test")
    try:
        source.open(stream, head, memory_limit=memory_limit)
        out = bytearray()
        for start, length in source.data_extents():
            assert start >= 0 and start + length <= source.size
            for off in range(start, start + length, block):
                piece = source.read(off, min(block, start + length - off))
                assert len(piece) == min(block, start + length - off)
                out += piece[:64]  # enough to see what came out, not the disk
        source.finish()
        return bytes(out), source
    finally:
        source.close()


def bounded(fn, *args, **kwargs):
    """fn's outcome (its result or the SourceError it raised), the peak bytes allocated and seconds taken."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        try:
            outcome = fn(*args, **kwargs)
        except SourceError as exc:
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1], time.monotonic() - started
    finally:
        tracemalloc.stop()


# ---- images that name another file are refused, not read from a local copy ----------------------------

@pytest.mark.parametrize("what,kwargs", [("backing file", {"backing": True}),
                                         ("external data file", {"data_file": True})])
def test_an_image_naming_another_file_is_refused_outright(what: str, kwargs: dict) -> None:
    data = image(MiB, [0], {}, **kwargs)
    with pytest.raises(ImageRefused, match=f"image refused: .*{what}") as err:
        parse_header(data[:HEAD_SIZE], "a.qcow2")
    assert not isinstance(err.value, Qcow2Unsupported), "a local copy through qemu would follow the reference"


def test_images_qemu_img_writes_with_a_backing_file_are_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"proxy secret" * 100)
    img = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(img)], check=True)
    with pytest.raises(ImageRefused, match="backing file"):
        parse_header(img.read_bytes()[:HEAD_SIZE], "a.qcow2")


# ---- sizes a header claims ---------------------------------------------------------------------------

def test_a_virtual_size_of_exabytes_is_refused_from_the_header() -> None:
    with pytest.raises(ImageRefused, match="virtual size"):
        parse_header(image(1 << 60, [], {}, l1_size=(1 << 60) >> 29)[:HEAD_SIZE], "a.qcow2")


def test_an_l1_table_larger_than_qemu_opens_is_refused() -> None:
    size = 32 << 40  # 32 TiB with 512-byte clusters: 2**30 L1 entries (8 GiB of table)
    with pytest.raises(ImageRefused, match="L1 table"):
        parse_header(image(size, [], {}, cluster_bits=9, l1_size=size >> 15)[:HEAD_SIZE], "a.qcow2")


def test_l1_entries_sharing_one_l2_table_are_refused_in_bounded_memory() -> None:
    """64 L1 entries naming one L2 table of 8192 data clusters: half a million clusters awaited from a
    200 KiB file, unless refused."""
    cs, n = 64 * KiB, 64
    table = 2 * cs
    entries = [COPIED | (0x10_0000_0000 + j * cs) for j in range(cs // 8)]  # data far past the end
    data = image(n * cs * (cs // 8), [COPIED | table] * n, {table: l2(entries)})
    outcome, peak, took = bounded(read_all, data)
    assert isinstance(outcome, ImageRefused) and "same L2 table" in str(outcome), outcome
    assert peak < 32 * MiB and took < 30


def test_tables_mapping_far_ahead_of_their_data_are_refused_in_bounded_memory() -> None:
    cs, n = 64 * KiB, 10  # 10 L2 tables of 8192 clusters each, all data awaited at once
    tables = {(2 + i) * cs: l2([COPIED | (0x10_0000_0000 + (i * (cs // 8) + j) * cs) for j in range(cs // 8)])
              for i in range(n)}
    data = image(n * cs * (cs // 8), [COPIED | off for off in tables], tables)
    outcome, peak, took = bounded(read_all, data)
    assert isinstance(outcome, ImageRefused) and "ahead of their data" in str(outcome), outcome
    assert peak < 48 * MiB, f"{peak} bytes for a {len(data)}-byte image"
    assert took < 60


def test_a_compressed_cluster_that_inflates_to_gigabytes_costs_one_cluster() -> None:
    cs = 64 * KiB
    compressor = zstandard.ZstdCompressor().compressobj()
    zeros = bytes(MiB)
    bomb = b"".join(compressor.compress(zeros) for _ in range(1024)) + compressor.flush()  # 1 GiB of zeros
    assert len(bomb) < 120 * KiB
    data_at = 3 * cs
    sectors = -(-len(bomb) // 512)
    entry = COMPRESSED | ((sectors - 1) << (62 - (16 - 8))) | data_at
    data = image(cs * (cs // 8), [COPIED | 2 * cs], {2 * cs: l2([entry]), data_at: bomb}, zstd=True)
    outcome, peak, took = bounded(read_all, data)
    assert not isinstance(outcome, Exception), outcome
    assert outcome[0][:64] == bytes(64)
    assert peak < 32 * MiB, f"{peak} bytes to decompress one {cs}-byte cluster"
    assert took < 30


# ---- fuzzing -----------------------------------------------------------------------------------------

def _entry(kind: str, value: int, cs: int, cluster_bits: int, first_data: int) -> int:
    """An L2 entry of `kind`; data and compressed ones mostly point into the payload after the tables."""
    if kind == "unallocated":
        return 0
    if kind == "zero":
        return 1
    if kind == "data":
        return COPIED | (first_data + value % 8) * cs
    shift = 62 - (cluster_bits - 8)
    return COMPRESSED | ((value % 4) << shift) | (first_data * cs + value % (8 * cs))


entries_st = st.lists(st.tuples(st.sampled_from(["unallocated", "zero", "data", "compressed", "raw"]),
                                st.integers(0, (1 << 64) - 1)), max_size=24)


def _generated(cluster_bits: int, size: int, l1_raw: list[int], l2_specs: list[list[tuple[str, int]]],
               payload: bytes, zstd: bool) -> bytes:
    """An image of `l2_specs` tables named by L1 entries (mostly valid ones), a size mostly within
    what the L1 table maps, and `payload` after the tables for the data clusters to point into."""
    cs = 1 << cluster_bits
    first_data = 2 + len(l2_specs)
    tables = {}
    for i, spec in enumerate(l2_specs):
        values = [v if kind == "raw" else _entry(kind, v, cs, cluster_bits, first_data) for kind, v in spec]
        tables[(2 + i) * cs] = l2(values, cs)
    l1 = [COPIED | (2 + (v % max(len(l2_specs), 1))) * cs if v % 5 else v for v in l1_raw]
    if size % 7:
        size %= len(l1) * cs * (cs // 8) + 1
    data = image(size, l1, tables, cluster_bits=cluster_bits, zstd=zstd)
    if payload:  # fill the 8 clusters the data entries point to, and maybe a little more
        payload = (payload * (8 * cs // len(payload) + 1))[:8 * cs + len(payload) % cs]
    return data.ljust(first_data * cs, b"\0") + payload


@given(cluster_bits=st.integers(9, 12), size=st.integers(0, 1 << 22), l1_raw=st.lists(st.integers(0, (1 << 64) - 1),
       max_size=8), l2_specs=st.lists(entries_st, max_size=4), payload=st.binary(max_size=16384), zstd=st.booleans())
def test_generated_tables_give_guest_bytes_or_a_source_error(cluster_bits, size, l1_raw, l2_specs, payload,
                                                             zstd) -> None:
    data = _generated(cluster_bits, size, l1_raw, l2_specs, payload, zstd)
    try:
        _out, source = read_all(data, memory_limit=64 * KiB, block=64 * KiB)
    except SourceError:
        return
    assert source.memory_peak <= 64 * KiB


@pytest.fixture(scope="module")
def qemu_made(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small compressed image as qemu-img writes it, whose header and tables the mutations hit."""
    tmp = tmp_path_factory.mktemp("qemu-made")
    raw = tmp / "a.raw"
    with open(raw, "wb") as f:
        f.truncate(2 * MiB)
        for off in range(0, 2 * MiB, 192 * KiB):
            f.seek(off)
            f.write(bytes(range(256)) * 16)
    img = tmp / "a.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096",
                    str(raw), str(img)], check=True)
    return img.read_bytes()


mutation_st = st.lists(st.tuples(st.integers(0, 5 * 4096 - 1), st.integers(0, 255)), min_size=1, max_size=16)


def _mutated(base: bytes, mutations: list[tuple[int, int]]) -> bytes:
    data = bytearray(base)
    for at, value in mutations:
        data[at % len(data)] = value
    return bytes(data)


@given(mutations=mutation_st)
def test_mutated_images_give_guest_bytes_or_a_source_error(qemu_made: bytes, mutations) -> None:
    try:
        read_all(_mutated(qemu_made, mutations), memory_limit=64 * KiB, block=64 * KiB)
    except SourceError:
        pass


def _guest_view(data: bytes) -> bytes:
    """Every guest byte the stream reader gives for the image, read in guest order."""
    stream = io.BytesIO(data)
    head = stream.read(HEAD_SIZE)
    source = Qcow2StreamSource(path="hostile.qcow2", name="hostile.qcow2", key="test")
    try:
        source.open(stream, head, memory_limit=64 * KiB)
        extents = source.data_extents()
        out = bytearray()
        for off in range(0, source.size, 64 * KiB):
            length = min(64 * KiB, source.size - off)
            inside = any(s < off + length and off < s + n for s, n in extents)
            out += source.read(off, length) if inside else bytes(length)
        source.finish()
        return bytes(out)
    finally:
        source.close()


def _qemu_view(data: bytes) -> bytes | None:
    """What qemu says the guest sees, or None when qemu will not read the image either."""
    with tempfile.TemporaryDirectory() as tmp:
        img, raw = Path(tmp) / "a.qcow2", Path(tmp) / "a.raw"
        img.write_bytes(data)
        done = subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(img), str(raw)],
                              capture_output=True, timeout=60)
        return raw.read_bytes() if done.returncode == 0 else None


@pytest.mark.slow
@settings(max_examples=3000)
@given(mutations=mutation_st)
def test_mutated_images_read_as_qemu_reads_them(qemu_made: bytes, mutations) -> None:
    """The long run: whatever the reader returns for a damaged image is what qemu reads from it."""
    data = _mutated(qemu_made, mutations)
    try:
        ours = _guest_view(data)
    except SourceError:
        return
    theirs = _qemu_view(data)
    if theirs is not None and len(theirs) == len(ours):
        assert ours == theirs, "the stream reader returned bytes qemu does not see"


@pytest.mark.slow
@settings(max_examples=5000)
@given(cluster_bits=st.integers(9, 12), size=st.integers(0, 1 << 22),
       l1_raw=st.lists(st.integers(0, (1 << 64) - 1), max_size=8), l2_specs=st.lists(entries_st, max_size=4),
       payload=st.binary(max_size=16384), zstd=st.booleans())
def test_generated_tables_long_run(cluster_bits, size, l1_raw, l2_specs, payload, zstd) -> None:
    try:
        read_all(_generated(cluster_bits, size, l1_raw, l2_specs, payload, zstd), memory_limit=64 * KiB,
                 block=64 * KiB)
    except SourceError:
        pass
