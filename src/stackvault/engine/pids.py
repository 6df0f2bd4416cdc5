"""Is a process still there? Asked of /proc and kill(0) by every piece that cleans up after killed jobs.

A killed job cannot clean up after itself, so the next one decides from its pid whether what it left
(a staging file, a qemu-nbd socket directory, a lock) is an orphan. A pid is reused once its process is
gone, so where an entry outlives its process by long, its start time is kept with it and compared.
"""

from __future__ import annotations

import os

#: The largest pid Linux hands out (pid_max is at most 2^22): a larger one names no process, and
#: kill(2) with 0 or a negative one would ask about whole process groups.
MAX_PID = 1 << 22


def alive(pid: int) -> bool:
    """Whether a process of this pid exists (one of another user's counts: it may be the owner)."""
    if not 0 < pid <= MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read(4096).rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, which tells a reused pid apart."""
    fields = _stat_fields(pid)
    return fields[19].decode() if fields and len(fields) > 19 else None


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None
