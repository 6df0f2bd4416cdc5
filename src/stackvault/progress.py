"""Progress of long jobs on stderr, never silent and never in the way of the report on stdout.

Three shapes, chosen by where stderr goes (`progress_mode`):
- a terminal: one bar per disk (rich's live display), so parallel servers' disks each keep their own
  line instead of overwriting one another, and a finished display leaves the cursor on a clean line;
- anything else (a log file, journald, cron mail): every `interval` seconds a line per disk under
  way, so a multi-hour job shows it is alive;
- `--json`: the same as JSON objects (`{"event": "progress", "disk", "bytes_done", "bytes_total",
  "bytes_per_s", "elapsed_s"}`), one per line, for a program watching the job.

A job sees only a `ProgressFactory`: called with a disk's label and size, it returns the callback the
engine calls with each count of bytes done; the callbacks may be called from many threads.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO

ProgressFactory = Callable[[str, int], Callable[[int], None]]

#: Off a terminal, the default seconds between two progress lines of a disk under way.
DEFAULT_INTERVAL_S = 30.0


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressMode(StrEnum):
    OFF = "off"
    BARS = "bars"
    LINES = "lines"
    JSON = "json"


def progress_mode(quiet: bool, as_json: bool, stream: TextIO | None = None) -> ProgressMode:
    """`-q`: none; `--json`: JSON events; a terminal: bars; else plain lines."""
    if quiet:
        return ProgressMode.OFF
    if as_json:
        return ProgressMode.JSON
    stream = stream or sys.stderr
    return ProgressMode.BARS if stream is not None and stream.isatty() else ProgressMode.LINES


@contextmanager
def progress_display(mode: ProgressMode, interval_s: float = DEFAULT_INTERVAL_S,
                     stream: TextIO | None = None) -> Iterator[ProgressFactory | None]:
    """The factory jobs take for the length of the `with` block (None: no progress at all)."""
    out = stream or sys.stderr
    if mode is ProgressMode.OFF:
        yield None
    elif mode is ProgressMode.BARS:
        with _bars(out) as factory:
            yield factory
    else:
        yield _Periodic(out, interval_s, as_json=mode is ProgressMode.JSON).disk


@contextmanager
def _bars(out: TextIO) -> Iterator[ProgressFactory]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bars = Progress(TextColumn("{task.description:<24.24}"), BarColumn(), TaskProgressColumn(),
                    DownloadColumn(binary_units=True), TransferSpeedColumn(), TimeRemainingColumn(),
                    console=Console(file=out), redirect_stdout=False, redirect_stderr=True)

    started = threading.Lock()

    def disk(label: str, total: int) -> Callable[[int], None]:
        # The display starts with the first disk, after any question the command asks on the terminal
        # (a passphrase, a confirmation): a live display holds back stderr text that ends no line.
        with started:
            if not bars.live.is_started:
                bars.start()
        task = bars.add_task(label, total=max(total, 1))
        return lambda nbytes: bars.advance(task, nbytes)

    try:
        yield disk
    finally:
        if bars.live.is_started:
            bars.stop()  # ends the display's last line: the next output starts on a fresh one


@dataclass
class _Disk:
    label: str
    total: int
    started: float
    done: int = 0
    last: float = 0.0


class _Periodic:
    """A line (or a JSON event) per disk under way every `interval_s` seconds; nothing for a disk that
    takes less (a short job's stderr stays as it was)."""

    def __init__(self, out: TextIO, interval_s: float, as_json: bool) -> None:
        self.out, self.interval_s, self.as_json = out, interval_s, as_json
        self.lock = threading.Lock()

    def disk(self, label: str, total: int) -> Callable[[int], None]:
        now = time.monotonic()
        disk = _Disk(label, total, started=now, last=now)

        def advance(nbytes: int) -> None:
            with self.lock:
                disk.done += nbytes
                now = time.monotonic()
                if now - disk.last >= self.interval_s:
                    disk.last = now
                    self._emit(disk, now - disk.started)

        return advance

    def _emit(self, disk: _Disk, elapsed: float) -> None:
        rate = disk.done / elapsed if elapsed > 0 else 0.0
        if self.as_json:
            line = json.dumps({"event": "progress", "disk": disk.label, "bytes_done": disk.done,
                               "bytes_total": disk.total, "bytes_per_s": round(rate), "elapsed_s": round(elapsed, 3)})
        else:
            pct = 100 * disk.done / disk.total if disk.total else 100.0
            line = (f"stackvault: progress: {disk.label}: {pct:.0f}% ({human_bytes(disk.done)} of "
                    f"{human_bytes(disk.total)}, {human_bytes(rate)}/s, {elapsed:.0f} s)")
        self.out.write(line + "\n")
        self.out.flush()
