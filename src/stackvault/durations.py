"""Durations as operators write them: `90`, `30s`, `30m`, `1h`, `7d`, `2w`, `1h30m`.

A small parser rather than a library: python-dateutil (already a dependency) parses dates, not
durations, and the libraries that do (pytimeparse, humanfriendly) are unmaintained or pull in far
more than these few units; the grammar is the one restic, borg and systemd timers share.
"""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhdw])")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)[smhdw])+")


def duration_seconds(text: str) -> float | None:
    """Seconds of a duration with units (`1h30m` -> 5400.0), or None when `text` is not one.

    A bare number is left to the caller (it is seconds, and `float` also reads exponents)."""
    compact = text.strip().lower()
    if not _WHOLE.fullmatch(compact):
        return None
    return float(sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(compact)))
