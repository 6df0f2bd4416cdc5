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


def write_atomic(path: str | Path, data: bytes | bytearray | memoryview, *, durable: bool = True,
                 dir_fd: int | None = None, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically; with `durable`, also survive a power loss.

    With `dir_fd`, `path` is a name in that open directory: the caller walked to it without following
    symbolic links, and nothing here follows one either (the temporary file is O_EXCL|O_NOFOLLOW, and
    rename replaces a link rather than writing through it). The file is private to the proxy user unless
    `mode` says otherwise (set before the rename: a reader never meets the file with other rights)."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    # Not ending in the target's suffix: a reader of `*.prom` or `*.json` in the directory skips it.
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(6)}-{os.path.basename(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)  # not left to the umask, which the proxy sets to 077
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
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    if durable:
        if dir_fd is None:
            fsync_dir(directory)
        else:
            os.fsync(dir_fd)
