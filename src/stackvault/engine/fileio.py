"""The few Linux file calls Python's os module lacks (syncfs, fallocate's hole punching,
sync_file_range), a full pwrite, and taking back permissions others were given; one libc handle."""

from __future__ import annotations

import ctypes
import os
import stat
import threading

libc = ctypes.CDLL(None, use_errno=True)
_sync_file_range = getattr(libc, "sync_file_range", None)  # Linux only; without it writeback waits for fsync
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_SYNC_FILE_RANGE_WRITE = 0x2


def make_private(path: str | os.PathLike[str]) -> None:
    """Take group and other permissions away from a file or directory this user owns.

    Everything stackvault creates is private (it runs under umask 077), but a repository, working
    directory or catalog made by an older version, or under a looser umask, keeps its modes: on such
    an installation a directory's own mode is what keeps other local users out of everything below.
    Anything that cannot be changed (another owner, a read-only file system) is left as it is.
    """
    try:
        st = os.stat(path, follow_symlinks=False)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Make a range of a file read as zeros without writing them (OSError where unsupported)."""
    if libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, ctypes.c_long(offset), ctypes.c_long(length)):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing `fd`'s dirty pages now, without waiting (ignored where unsupported)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


class Writeback:
    """Starts the kernel writing a file's dirty pages every `every` bytes written to it.

    Linux starts writing back only once dirty pages pass a share of RAM (gigabytes on a proxy), so a
    restore would leave all its bytes to the final fsync: 0.5 s of the 1.6 s restore of the bench's
    1.2 GiB. Asking for writeback as it goes (sync_file_range, asynchronous) overlaps the disk's writes
    with the restore; the fsync stays, and finds little left to do. A kernel or file system without the
    call just leaves everything to the fsync, as before."""

    def __init__(self, every: int = 64 << 20) -> None:
        self._every = every
        self._pending = 0
        self._guard = threading.Lock()

    def wrote(self, fd: int, nbytes: int) -> None:
        with self._guard:
            self._pending += nbytes
            if self._pending < self._every:
                return
            self._pending = 0
        start_writeback(fd)
