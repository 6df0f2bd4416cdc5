"""The proof of quiesce reads a tenant's disk on the proxy: a crafted partition table or marker file
must give the result `unreadable` (with why) within fixed memory and time, never an exception or a
proxy out of memory. Each disk here is backed up into a real repository and read the way the proof
reads it (`read_marker`); the partition parsers are also fuzzed with arbitrary first sectors."""

from __future__ import annotations

import os
import struct
import subprocess
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackvault.cloud.guest_hook import MARKER_MAGIC
from stackvault.engine.manifest import DiskRecord
from stackvault.engine.pipeline import DiskBackup
from stackvault.engine.repository import Repository
from stackvault.engine.sources import RawSource
from stackvault.engine.state import DiskBase
from stackvault.jobs.quiesce_proof import UnreadableDisk, partitions, read_marker
from stackvault.storage.memory import MemoryBackend

MiB = 1 << 20
BLOCK = 64 << 10
DISK = 64 * MiB


def _backed_up(tmp_path: Path, image: Path) -> tuple[SimpleNamespace, DiskRecord]:
    """The image as a backup in a fresh repository, and what `read_marker` needs to read it."""
    repo = Repository.init(MemoryBackend(), BLOCK)
    source = RawSource(path=str(image), name="vda", key="vda", format="raw", meta={})
    source.open()
    try:
        index, _bitmap = DiskBackup(repo, source, "full", DiskBase(), "20261201T000000000Z-aaaaaa", workers=2).run()
    finally:
        source.close()
    key, _ = repo.put_index("20261201T000000000Z-aaaaaa", 0, index)
    disk = DiskRecord(position=0, name="vda", disk_key="vda", size=index.disk_size, block_size=BLOCK, level="full",
                      index=key, index_checksum=index.checksum().hex(),
                      full_backup_id="20261201T000000000Z-aaaaaa")
    ctx = SimpleNamespace(repo=repo, settings=SimpleNamespace(workdir=tmp_path / "work", workers=2))
    return ctx, disk


def _gpt_disk(path: Path, *, entries_lba: int = 2, count: int = 128, entry_size: int = 128) -> Path:
    """A sparse disk with a protective MBR and a GPT header saying what the test wants (1 KiB crafted)."""
    with open(path, "wb") as f:
        f.truncate(DISK)
        f.seek(446)
        f.write(struct.pack("<B3xB3xII", 0, 0xEE, 1, DISK // 512 - 1))
        f.seek(510)
        f.write(b"\x55\xaa")
        f.write(b"EFI PART" + bytes(64) + struct.pack("<QII", entries_lba, count, entry_size))
        f.seek(4 * MiB)
        f.write(os.urandom(MiB))  # data the proof has no reason to read
    return path


def _proof_of(tmp_path: Path, image: Path) -> tuple[tuple, int, float]:
    """(read_marker's result, peak bytes allocated while reading, seconds)."""
    ctx, disk = _backed_up(tmp_path, image)
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = read_marker(ctx, disk)
        return result, tracemalloc.get_traced_memory()[1], time.monotonic() - started
    finally:
        tracemalloc.stop()


def test_a_gpt_entry_size_of_zero_is_unreadable(tmp_path: Path) -> None:
    (outcome, marker, detail), peak, took = _proof_of(tmp_path, _gpt_disk(tmp_path / "d.raw", entry_size=0))
    assert (outcome, marker) == ("unreadable", None)
    assert "entry size of 0" in detail
    assert peak < 8 * MiB and took < 30


def test_a_gpt_claiming_huge_entries_reads_no_more_than_a_table(tmp_path: Path) -> None:
    """256 entries of 4 GiB each would be the whole disk and more: the proof reads a few KiB."""
    image = _gpt_disk(tmp_path / "d.raw", count=0xFFFFFFFF, entry_size=0xFFFFFFF0)
    (outcome, _marker, detail), peak, took = _proof_of(tmp_path, image)
    assert outcome == "unreadable" and "entry size" in detail
    assert peak < 8 * MiB, f"{peak} bytes allocated reading a 1 KiB crafted header"
    assert took < 30


def test_gpt_entries_outside_the_disk_are_unreadable(tmp_path: Path) -> None:
    image = _gpt_disk(tmp_path / "d.raw", entries_lba=1 << 60)
    (outcome, _marker, detail), peak, _took = _proof_of(tmp_path, image)
    assert outcome == "unreadable" and "outside the disk" in detail
    assert peak < 8 * MiB


def _ext4_with_marker(tmp_path: Path, marker_size: int, content: bytes) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    with open(root / ".stackvault-quiesce", "wb") as f:
        f.write(content)
        f.truncate(marker_size)  # sparse: nothing on disk, but `cat` prints all of it
    image = tmp_path / "d.raw"
    with open(image, "wb") as f:
        f.truncate(DISK)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(image)], check=True,
                   env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
    return image


def test_a_huge_sparse_marker_file_is_unreadable_within_bounded_memory(tmp_path: Path) -> None:
    image = _ext4_with_marker(tmp_path, 256 * MiB, f"{MARKER_MAGIC}\nstate=frozen\n".encode())
    (outcome, marker, detail), peak, took = _proof_of(tmp_path, image)
    assert (outcome, marker) == ("unreadable", None), detail
    assert "size limit" in detail
    assert peak < 16 * MiB, f"{peak} bytes allocated for the output of debugfs"
    assert took < 60
    assert not os.listdir(tmp_path / "work" / "tmp"), "the restored disk is gone"


def test_a_good_marker_is_still_found(tmp_path: Path) -> None:
    text = f"{MARKER_MAGIC}\nstate=frozen\ntime=1700000000\nnonce=ab12\n".encode()
    image = _ext4_with_marker(tmp_path, len(text), text)
    (outcome, marker, detail), _peak, _took = _proof_of(tmp_path, image)
    assert outcome == "found", detail
    assert (marker.state, marker.time, marker.nonce) == ("frozen", 1700000000, "ab12")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may take the network away")
def test_debugfs_runs_without_network() -> None:
    from stackvault.engine import child
    from stackvault.jobs.quiesce_proof import _no_network

    prefix = _no_network()
    if not prefix:
        pytest.skip("this machine allows no new network namespace")
    out = child.run([*prefix, "cat", "/proc/net/dev"])
    interfaces = {line.split(":")[0].strip() for line in out.stdout.decode().splitlines()[2:]}
    assert interfaces == {"lo"}, interfaces


# ---- fuzzing: any first 34 sectors give partitions inside the disk or UnreadableDisk --------------

def _reader(head: bytes, disk_size: int, reads: list[int]):
    def read(offset: int, length: int) -> bytes:
        reads.append(length)
        end = min(offset + length, disk_size)
        if end <= offset:
            return b""
        data = head[offset:end]
        return data + bytes(end - offset - len(data))  # the rest of the disk reads as zeros
    return read


def _mbr(parts: list[tuple[int, int, int]]) -> bytes:
    table = b"".join(struct.pack("<B3xB3xII", 0, kind, first, count) for kind, first, count in parts)
    return bytes(446) + table.ljust(64, b"\0") + b"\x55\xaa"


u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
mbr_entry = st.tuples(st.sampled_from([0, 0x83, 0xEE, 0x07, 0xFF]), u32, u32)
gpt_fields = st.tuples(st.one_of(st.integers(0, 64), u64), u32, st.one_of(st.sampled_from([0, 8, 128, 256]), u32))


def _check(head: bytes, disk_size: int) -> None:
    reads: list[int] = []
    try:
        found = partitions(_reader(head, disk_size, reads), disk_size)
    except UnreadableDisk as exc:
        assert str(exc)
        found = []
    assert sum(reads) <= 34 * 512 + 256 * 4096, f"read {sum(reads)} bytes for a partition table"
    for part in found:
        assert part.start >= 0 and part.start + part.size <= disk_size, part


@given(entries=st.lists(mbr_entry, min_size=1, max_size=4), gpt=gpt_fields, tail=st.binary(max_size=2048),
       disk_size=st.integers(0, 1 << 44))
def test_any_partition_table_gives_partitions_inside_the_disk_or_unreadable(entries, gpt, tail, disk_size) -> None:
    lba, count, size = gpt
    head = _mbr(entries) + b"EFI PART" + bytes(64) + struct.pack("<QII", lba, count, size) + tail
    _check(head, disk_size)


@given(head=st.binary(min_size=0, max_size=34 * 512), disk_size=st.integers(0, 1 << 44))
def test_any_first_sectors_are_parsed_or_refused(head, disk_size) -> None:
    _check(head, disk_size)


@pytest.mark.slow
@settings(max_examples=20000)
@given(entries=st.lists(mbr_entry, min_size=1, max_size=4), gpt=gpt_fields, tail=st.binary(max_size=34 * 512),
       disk_size=st.integers(0, 1 << 44))
def test_partition_tables_long_run(entries, gpt, tail, disk_size) -> None:
    lba, count, size = gpt
    _check(_mbr(entries) + b"EFI PART" + bytes(64) + struct.pack("<QII", lba, count, size) + tail, disk_size)
