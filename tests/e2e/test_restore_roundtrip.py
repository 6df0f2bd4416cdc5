"""Restored bytes equal the source bytes, for raw and qcow2 sources, at every level, for every backup of a series.

A user trusts a backup tool only if the disk they get back is the disk they had, so every test here
compares hashes of whole images, never the tool's own idea of what it did.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .helpers import (
    BLOCK,
    KIB,
    MIB,
    Stackvault,
    allocated_bytes,
    churn,
    make_random_image,
    make_sparse_image,
    qcow2_guest_sha256,
    qemu_img,
    qemu_img_info,
    sha256_file,
    to_qcow2,
    write_at,
)

#: Ten backups mixing all three levels, including a differential right after a full and a second full.
SERIES_LEVELS = [
    "full", "incremental", "incremental", "differential", "incremental",
    "differential", "full", "differential", "incremental", "incremental",
]


def _sparse_disk(path: Path, rng: random.Random, size: int = 16 * MIB) -> Path:
    """A disk as a guest leaves it: some random data, some OS-like text, some written zeros, holes elsewhere."""
    return make_sparse_image(path, size, rng, [
        (0, 2 * MIB, "random"),
        (4 * MIB, 2 * MIB, "text"),
        (8 * MIB, 1 * MIB, "zero"),
        (12 * MIB + 5000, 700 * KIB, "random"),
    ])


def _change(raw: Path, rng: random.Random) -> None:
    """A random day of guest writes: scattered small and large writes, sometimes a zeroed range."""
    churn(raw, rng, writes=rng.randint(1, 30), max_len=rng.choice([1, 512, 8 * KIB, 200 * KIB]))
    if rng.random() < 0.4:
        length = rng.randint(1, 3) * BLOCK + rng.randint(0, 999)
        write_at(raw, rng.randrange(0, raw.stat().st_size - length), bytes(length))


#: The fast tier's series: every level once, and an incremental after a differential.
SHORT_LEVELS = ["full", "incremental", "differential", "incremental"]


@pytest.mark.slow
@pytest.mark.parametrize("source_format", ["raw", "qcow2"])
def test_every_backup_of_a_series_of_ten_restores_to_the_bytes_of_its_time(
    repo: Stackvault, rng: random.Random, tmp_path: Path, source_format: str
) -> None:
    _restore_every_backup_of_a_series(repo, rng, tmp_path, source_format, SERIES_LEVELS)


@pytest.mark.parametrize("source_format", ["raw", pytest.param("qcow2", marks=pytest.mark.slow)])
def test_every_level_restores_to_the_bytes_of_its_time(
    repo: Stackvault, rng: random.Random, tmp_path: Path, source_format: str
) -> None:
    _restore_every_backup_of_a_series(repo, rng, tmp_path, source_format, SHORT_LEVELS)


def _restore_every_backup_of_a_series(repo: Stackvault, rng: random.Random, tmp_path: Path, source_format: str,
                                      levels: list[str]) -> None:
    """Back up after each random change, keeping the image's hash; then restore every backup and compare."""
    raw = _sparse_disk(tmp_path / "disk.raw", rng)
    source = raw if source_format == "raw" else to_qcow2(raw, tmp_path / "disk.qcow2")
    taken: list[tuple[str, str, str]] = []  # (backup id, level, sha256 of the guest bytes at that time)
    for i, level in enumerate(levels):
        if i:
            _change(raw, rng)
            if source_format == "qcow2":
                to_qcow2(raw, source)
        report = repo.backup(source if source_format == "raw" else f"qcow2:{source}", level=level)
        assert report["level"] == level, report
        assert report["disks"][0]["size"] == raw.stat().st_size, report
        taken.append((report["backup_id"], level, sha256_file(raw)))

    assert repo.list_ids() == [bid for bid, _, _ in taken], "list must show every backup, newest last"
    for n, (bid, level, expected) in enumerate(taken, 1):
        out = repo.restore(bid, tmp_path / f"restored-{n}.raw")
        assert out.stat().st_size == raw.stat().st_size, f"backup {n} ({level}) restored with the wrong size"
        assert sha256_file(out) == expected, f"backup {n} of {len(taken)} ({level}, {bid}) restored different bytes"
        out.unlink()


def test_raw_restore_is_sparse_and_zero_blocks_are_not_stored(repo: Stackvault, rng: random.Random,
                                                               tmp_path: Path) -> None:
    size = 32 * MIB
    src = make_sparse_image(tmp_path / "sparse.raw", size, rng, [
        (0, 2 * MIB, "random"), (8 * MIB, 2 * MIB, "text"), (16 * MIB, 4 * MIB, "zero"),
    ])
    report = repo.backup(src, level="full")
    disk = report["disks"][0]
    # 4 MiB of data in 64 KiB blocks: every other block is a hole or written zeros.
    assert disk["blocks_total"] == size // BLOCK, report
    assert disk["blocks_zero"] == (size - 4 * MIB) // BLOCK, report
    assert report["bytes_stored"] <= 4 * MIB + 64 * KIB, report

    out = repo.restore(report["backup_id"], tmp_path / "out.raw")
    assert sha256_file(out) == sha256_file(src)
    assert out.stat().st_size == size
    assert allocated_bytes(out) <= 4 * MIB + 512 * KIB, (
        f"raw restore is not sparse: {allocated_bytes(out)} bytes allocated for 4 MiB of data in {size}")


def test_holes_are_not_read(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """SEEK_DATA/SEEK_HOLE: a mostly-hole file is read for its allocated bytes only (bytes_read says so)."""
    src = make_sparse_image(tmp_path / "holes.raw", 64 * MIB, rng, [(10 * MIB, 1 * MIB, "random")])
    report = repo.backup(src, level="full")
    assert report["bytes_read"] <= allocated_bytes(src) + 2 * BLOCK, (
        f"bytes_read {report['bytes_read']} for a 64 MiB file with {allocated_bytes(src)} bytes allocated")


def test_qcow2_restore_output_converts_back_to_the_same_bytes(repo: Stackvault, rng: random.Random,
                                                             tmp_path: Path) -> None:
    raw = _sparse_disk(tmp_path / "disk.raw", rng, size=24 * MIB)
    report = repo.backup(raw, level="full")
    out = repo.restore(report["backup_id"], tmp_path / "out.qcow2", fmt="qcow2")
    info = qemu_img_info(out)
    assert info["format"] == "qcow2", info
    assert info["virtual-size"] == raw.stat().st_size, info
    assert qcow2_guest_sha256(out, tmp_path / "check") == sha256_file(raw)
    assert allocated_bytes(out) < 8 * MIB, "qcow2 output should not allocate the holes"


def test_forced_qcow2_prefix_and_unchanged_qcow2_rewrite_stores_nothing(repo: Stackvault, rng: random.Random,
                                                                       tmp_path: Path) -> None:
    """qcow2 is read by guest offsets: a re-converted file (new layout, same guest bytes) has no changed block."""
    raw = _sparse_disk(tmp_path / "disk.raw", rng)
    qcow = to_qcow2(raw, tmp_path / "disk.qcow2")
    repo.backup(f"qcow2:{qcow}", level="full")
    qcow.unlink()
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=128k", str(raw), str(qcow))
    report = repo.backup(f"qcow2:{qcow}", level="incremental")
    assert report["level"] == "incremental", report
    assert report["blocks_changed"] == 0 and report["bytes_stored"] == 0, report


def test_one_backup_of_two_disks_restores_each_disk(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    a = make_random_image(tmp_path / "a.img", 4 * MIB, rng)
    b = _sparse_disk(tmp_path / "b.img", rng, size=8 * MIB)
    report = repo.backup(a, b, level="full")
    assert sorted(d["name"] for d in report["disks"]) == ["a.img", "b.img"], report
    shown = repo.run("show", report["backup_id"]).data
    assert "a.img" in str(shown) and "b.img" in str(shown), shown
    for src in (a, b):
        out = repo.restore(report["backup_id"], tmp_path / f"out-{src.name}", extra=["--disk", src.name])
        assert sha256_file(out) == sha256_file(src), f"disk {src.name} restored different bytes"


def test_backup_can_be_named_by_latest_and_by_unique_prefix(repo: Stackvault, rng: random.Random,
                                                           tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", 2 * MIB, rng)
    first = repo.backup(src, level="full")["backup_id"]
    h1 = sha256_file(src)
    churn(src, rng, writes=5)
    second = repo.backup(src, level="incremental")["backup_id"]
    assert sha256_file(repo.restore("latest", tmp_path / "latest.raw")) == sha256_file(src)
    # a prefix of `first` long enough that `second` does not share it
    n = next(i for i in range(1, len(first) + 1) if first[:i] != second[:i])
    prefix = first[:max(n, 8)]
    assert sha256_file(repo.restore(prefix, tmp_path / "first.raw")) == h1
    assert repo.run("show", "latest").data is not None


def test_disk_that_grew_backs_up_and_restores_at_its_new_size(repo: Stackvault, rng: random.Random,
                                                             tmp_path: Path) -> None:
    """A volume extended between two backups (a common cloud operation) is backed up at its new size."""
    src = make_random_image(tmp_path / "grow.img", 4 * MIB, rng)
    repo.backup(src, level="full")
    with open(src, "ab") as f:
        f.write(rng.randbytes(2 * MIB))
    report = repo.backup(src, level="incremental")
    assert report["disks"][0]["size"] == 6 * MIB, report
    out = repo.restore(report["backup_id"], tmp_path / "out.raw")
    assert sha256_file(out) == sha256_file(src)
