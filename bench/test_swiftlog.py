"""The benchmark's reading of the Swift proxy log: which lines count, and how many calls overlapped.

Run with `.venv/bin/pytest bench/test_swiftlog.py` (instant; no Swift needed: the lines are copied
in the shape the proxy writes them).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import swiftlog


def line(method: str, start: float, end: float, *, client: str = "127.0.0.1", source: str = "-",
         recvd: str = "1048576", sent: str = "-") -> str:
    return (f"proxy-server: {client} {client} 01/Dec/2026/05/44/11 {method} /bucket/chunks/ab HTTP/1.0 "
            f"200 - Boto3/1.44.5%20md/Botocore - {recvd} {sent} - tx88e6-006b0e5eab - {end - start:.4f} "
            f"{source} - {start:.9f} {end:.9f} 0 test:tester")


def test_only_the_clients_requests_count():
    lines = [
        line("PUT", 10.0, 10.5),
        line("HEAD", 10.1, 10.2, client="-", source="VW"),  # a middleware's subrequest
        "Using for autocreate (txn: tx1)",  # start-up and other messages
        line("GET", 11.0, 11.2, recvd="-", sent="4096"),
    ]
    calls = swiftlog.by_method(swiftlog.parse(lines))
    assert sorted(calls) == ["GET", "PUT"]
    assert calls["PUT"].bytes == 1 << 20 and calls["GET"].bytes == 4096


def test_peak_and_mean_in_flight():
    # Three PUTs: the first two overlap, the third starts exactly when the first ends.
    calls = swiftlog.by_method(swiftlog.parse([
        line("PUT", 0.0, 1.0), line("PUT", 0.5, 2.0), line("PUT", 1.0, 2.0)]))["PUT"]
    assert calls.count == 3
    assert calls.peak_in_flight == 2  # an end and a start at the same instant do not overlap
    assert calls.mean_in_flight == (1.0 + 1.5 + 1.0) / 2.0
    assert round(calls.mean_latency, 6) == round(3.5 / 3, 6)


def test_log_tail_returns_only_new_complete_lines(tmp_path):
    path = tmp_path / "proxy.log"
    path.write_text("old line\n")
    tail = swiftlog.LogTail(str(path))
    with open(path, "a") as f:
        f.write("new 1\nnew 2\nhalf")
    assert tail.take() == ["new 1", "new 2"]
    with open(path, "a") as f:
        f.write(" written\n")
    assert tail.take() == ["half written"]
