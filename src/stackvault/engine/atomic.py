"""One atomic-write helper for every file that must survive a crash (as borg's SaveFile does).

A reader sees the old content or the new, never a mix: the data goes to a temporary file in the same
directory, is flushed and fsynced, renamed over the target, and the directory is fsynced so that the
rename itself is durable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from . import fileio

TEMP_PREFIX = ".tmp-"


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes | memoryview, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; with `durable`, also survive a power loss."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(6)}-{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
        else:  # made durable later (syncfs before a commit): the disk can start on it meanwhile
            fileio.start_writeback(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(directory)
