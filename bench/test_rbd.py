"""Checks of bench/rbd.py's own parts that need no Ceph: its options and where it writes the change.

Run with `.venv/bin/pytest bench/` (seconds).
"""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# Loaded under another name: `rbd` is librbd's module.
_spec = importlib.util.spec_from_file_location("bench_rbd", os.path.join(HERE, "rbd.py"))
assert _spec and _spec.loader
bench_rbd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_rbd)
MiB = bench_rbd.MiB


def test_options_default_to_a_few_gib_in_images_2_and_8_times_larger():
    a = bench_rbd.parse_args([])
    assert (a.written_bytes, a.factors, a.change, a.extent_bytes) == (2 << 30, [2, 8], 0.01, 64 << 10)
    a = bench_rbd.parse_args(["--written", "8G", "--image-factors", "1,4", "--extent", "4K"])
    assert (a.written_bytes, a.factors, a.extent_bytes) == (8 << 30, [1, 4], 4096)


@pytest.mark.parametrize("argv", [["--written", "10M"], ["--written", "65M"], ["--image-factors", "0"],
                                  ["--extent", "3K"], ["--extent", "3M"], ["--change", "0"], ["--written", "x"]])
def test_bad_options_are_refused(argv):
    with pytest.raises(SystemExit):
        bench_rbd.parse_args(argv)


def test_the_change_is_the_share_asked_for_in_distinct_places_inside_the_written_data():
    pieces = [k * 4 * MiB for k in (3, 10, 11, 40)]
    offsets = bench_rbd.change_extents(pieces, 16 * MiB, 0.05, 64 << 10, random.Random(1))
    assert len(offsets) == 13 == len(set(offsets)) and offsets == sorted(offsets)  # ceil(0.05 * 16 MiB / 64 KiB)
    assert all(any(p <= o < p + 4 * MiB for p in pieces) and o % (64 << 10) == 0 for o in offsets)
