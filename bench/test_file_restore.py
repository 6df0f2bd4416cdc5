"""Checks of bench/file_restore.py's own parts that need no backup: sizes and GNU time's report.

Run with `.venv/bin/pytest bench/` (seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import file_restore


@pytest.mark.parametrize(("text", "size"), [("10G", 10 << 30), ("1g", 1 << 30), ("512M", 512 << 20),
                                            ("4096", 4096)])
def test_sizes_take_binary_suffixes(text, size):
    assert file_restore.parse_size(text) == size


def test_the_report_of_a_real_command_gives_its_cpu_time_and_peak_memory(tmp_path):
    out = tmp_path / "time"
    burn = "b = bytearray(64 << 20); sum(range(3_000_000))"
    subprocess.run(["/usr/bin/time", "-f", file_restore.TIME_FORMAT, "-o", str(out), sys.executable, "-c", burn],
                   check=True)
    cpu, peak = file_restore.time_report(out.read_text())
    assert 0 < cpu < 60 and peak > 64 << 20


def test_the_report_of_a_command_ended_by_a_signal_reads_its_last_line():
    assert file_restore.time_report("Command terminated by signal 15\n1.50 0.25 20480\n") == (1.75, 20 << 20)
