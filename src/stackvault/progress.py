"""A progress line on stderr, only when stderr is a terminal (never in logs or --json output)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressBar:
    def __init__(self, label: str, total: int, stream=sys.stderr) -> None:
        self.label, self.total, self.stream = label, max(total, 1), stream
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            now = time.monotonic()
            if now - self._last < 0.2 and self.done < self.total:
                return
            self._last = now
            rate = self.done / max(now - self.started, 1e-6)
            pct = 100 * self.done / self.total
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            self.stream.write(f"\r{self.label[:24]:<24} [{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% "
                              f"{human_bytes(self.done)}/{human_bytes(self.total)} {human_bytes(rate)}/s ")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()


def progress_factory(enabled: bool) -> Callable[[str, int], Callable[[int], None]] | None:
    if not enabled or not sys.stderr.isatty():
        return None
    return lambda label, total: ProgressBar(label, total)
