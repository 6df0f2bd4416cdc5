"""Checks of the benchmark's own parts: the image is what the benchmark specifies, and the meter is honest.

Run with `.venv/bin/pytest bench/` (a few seconds; not part of `make test`, which runs tests/).
"""

from __future__ import annotations

import os
import sys

import pytest
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import imagegen
import report
from measure import PhaseResult, file_digest, run_measured

SIZE = 64 * imagegen.MiB


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("img") / "disk.img")
    layout = imagegen.plan_layout(SIZE, seed=7)
    imagegen.write_image(path, layout)
    return path, layout


def test_mix_is_exact_and_holes_are_real(image):
    path, layout = image
    assert layout.bytes_of(imagegen.HOLE) == pytest.approx(0.4 * SIZE, abs=imagegen.EXTENT_ALIGN)
    assert layout.bytes_of(imagegen.RANDOM) == pytest.approx(0.2 * SIZE, abs=imagegen.EXTENT_ALIGN)
    assert sum(e.length for e in layout.extents) == SIZE == os.path.getsize(path)
    # Holes never written: the file allocates only its data (plus a little filesystem slack).
    data = SIZE - layout.bytes_of(imagegen.HOLE)
    assert os.stat(path).st_blocks * 512 <= data * 1.02
    hole = next(e for e in layout.extents if e.kind == imagegen.HOLE)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.lseek(fd, hole.offset, os.SEEK_HOLE) == hole.offset
    finally:
        os.close(fd)


def test_same_seed_same_bytes_and_no_duplicate_blocks(image, tmp_path):
    path, layout = image
    again = str(tmp_path / "again.img")
    imagegen.write_image(again, imagegen.plan_layout(SIZE, seed=7))
    assert file_digest(again) == file_digest(path)
    blocks = set()
    with open(path, "rb") as f:
        for e in layout.extents:
            if e.kind != imagegen.HOLE:
                f.seek(e.offset)
                for _ in range(0, e.length, 64 * imagegen.KiB):
                    block = f.read(64 * imagegen.KiB)
                    assert block not in blocks, "a data block repeats: dedup would be unearned"
                    blocks.add(block)


def test_os_like_data_compresses_2_to_4x():
    data = imagegen.OsLikeData(7).generate("k", 8 * imagegen.MiB)
    zc = zstandard.ZstdCompressor(level=3)
    packed = sum(len(zc.compress(data[i:i + imagegen.MiB])) for i in range(0, len(data), imagegen.MiB))
    assert 2.0 <= len(data) / packed <= 4.0


def test_change_rewrites_one_percent_and_reverts(image):
    path, layout = image
    before = file_digest(path)
    allocated = os.stat(path).st_blocks
    change = imagegen.ImageChange(layout, 0.01)
    assert change.bytes_changed == pytest.approx(0.01 * SIZE, rel=0.1)
    change.apply(path)
    assert file_digest(path) != before
    change.revert(path)
    assert file_digest(path) == before
    assert os.stat(path).st_blocks <= allocated * 1.01  # holes written by the change punched again


def test_meter_sees_a_children_memory():
    res, _ = run_measured("t", "alloc", [sys.executable, "-c",
                                         "import time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); "
                                         "time.sleep(0.3)"])
    assert 200 * imagegen.MiB <= res.peak_rss <= 300 * imagegen.MiB


def test_targets_are_judged_by_restic_ratio():
    def r(tool, phase, wall):
        return PhaseResult(tool, phase, wall, 100 * imagegen.MiB, wall, 0)

    results = [r("stackvault", "full", 10), r("restic", "full", 31), r("stackvault", "incremental", 5),
               r("restic", "incremental", 20), r("stackvault", "restore", 5), r("restic", "restore", 11)]
    verdict = report.evaluate(results, [r("baseline", "read+blake3", 3)])
    status = {t["target"]: t["status"] for t in verdict["targets"]}
    assert status == {"Full >= 3x faster than restic": "PASS",
                      "Incremental >= 5x faster than restic": "MISS",
                      "Restore >= 2x faster than restic": "PASS",
                      "stackvault peak memory < 500 MiB": "PASS",
                      "Incremental within 2x of read+BLAKE3": "PASS"}
