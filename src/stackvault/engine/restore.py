"""Restoring one disk: fetch, verify and write every block of a block index to a target.

Every chunk is checked against its BLAKE3 id before a byte of it is written, and targets are written
under a temporary name that only becomes the real one when the whole disk was restored, so a damaged
repository makes a restore fail loudly instead of producing a wrong disk.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from ..errors import StackvaultError, UsageError
from . import child
from .blockindex import BlockIndex
from .fileio import Writeback, punch_hole, pwrite_all
from .repository import Repository
from .staging import StagingLedger
from .window import batched, map_bounded


class RestoreTarget(abc.ABC):
    """Where restored blocks go: a file or device that `open` opens as `_fd`, written from several
    threads at once. A fresh target reads as zeros; a reused device must be zeroed."""

    zero_filled: bool = True
    path: str

    def __init__(self) -> None:
        self._fd: int | None = None
        self._writeback = Writeback()

    @abc.abstractmethod
    def open(self, size: int) -> None: ...

    def write(self, offset: int, data: bytes) -> None:
        assert self._fd is not None
        try:
            pwrite_all(self._fd, data, offset)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        self._writeback.wrote(self._fd, len(data))

    def zero(self, offset: int, length: int) -> None:
        """Make a range read as zeros (only called when the target is not zero-filled)."""

    @abc.abstractmethod
    def commit(self) -> None:
        """The whole disk is written: make it durable and visible under its real name."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove every trace of a failed restore."""


class FileTarget(RestoreTarget):
    """A local raw file (sparse: zero blocks are never written) or qcow2 file (converted at the end).

    The disk is written to `PATH.partial`, created afresh (O_EXCL|O_NOFOLLOW, 0600: a link planted at
    that name is never written through, and only the proxy user can read the restored data) and renamed
    over PATH at the end. PATH must be a regular file or nothing: `--force` never replaces a device node
    (that is `--to device:PATH`), a directory or a pipe by a file. A `staging` ledger, when given, notes
    the staging files so that the next command removes them should this process be killed.
    """

    def __init__(self, path: str, fmt: str = "raw", *, overwrite: bool = False,
                 staging: StagingLedger | None = None) -> None:
        super().__init__()
        if fmt not in ("raw", "qcow2"):
            raise UsageError(f"unknown restore format {fmt!r}", "use --format raw or --format qcow2")
        self.path = os.path.abspath(path)
        self.format = fmt
        self._check_place(overwrite)
        self.partial = self.path + ".partial"
        self._raw = self.partial + ".raw" if fmt == "qcow2" else self.partial
        self._staging = staging
        self._noted: str | None = None

    def _check_place(self, overwrite: bool) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise UsageError(f"cannot use restore target {self.path}: {exc.strerror}",
                             "choose a path in a directory this user can write") from None
        if st is not None and stat.S_ISLNK(st.st_mode):
            # The commit replaces the link itself, never what it points at; so what it points at
            # decides: a link to a device (/dev/disk/by-id/...) must not become a file of the disk's size.
            try:
                st = os.stat(self.path)
            except OSError:
                pass  # a dangling link: replaced like a file
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise UsageError(f"restore target {self.path} is a directory",
                                 f"name the file to write, e.g. --to file:{os.path.join(self.path, 'disk.raw')}")
            if stat.S_ISBLK(st.st_mode):
                raise UsageError(f"restore target {self.path} is a block device: file: never replaces a device node",
                                 f"restore onto the device with --to device:{self.path} --force")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise UsageError(f"restore target {self.path} is not a regular file", "choose another path")
            if not overwrite:
                raise UsageError(f"restore target {self.path} exists", "choose another path or pass --force")
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise UsageError(f"directory of restore target {self.path} does not exist", "create it first")
        if not os.access(directory, os.W_OK | os.X_OK, effective_ids=True) or _read_only_fs(directory):
            raise UsageError(f"cannot write restore target {self.path}: its directory is not writable",
                             "choose a directory this user can write")

    def _create(self, path: str) -> int:
        """A new private file at `path`: a stale one (a killed restore's, or a link) is removed first."""
        try:
            os.unlink(path)  # never follows a link: removes the link itself
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise UsageError(f"restore staging path {path} is a directory", "move it away and retry") from None
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)

    def open(self, size: int) -> None:
        try:
            self._fd = self._create(self._raw)
            if self._raw != self.partial:  # qemu-img writes the qcow2 into this file of ours, not a link's
                os.close(self._create(self.partial))
            if self._staging is not None:  # noted before the file gets its size or a byte of data
                self._noted = self._staging.note([self._raw, self.partial])
            os.ftruncate(self._fd, size)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise _write_error(self.path, exc) from None
            raise

    def commit(self) -> None:
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        os.close(self._fd)
        self._fd = None
        if self.format == "qcow2":
            try:
                out = child.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", self._raw, self.partial],
                                child.SERVE)
            except FileNotFoundError:
                out = child.Finished(127, b"", "qemu-img is not installed")
            os.unlink(self._raw)
            if out.problem:
                raise StackvaultError(f"qemu-img could not write {self.path}: {out.problem}",
                                      "check free space and that qemu-utils is installed")
        os.replace(self.partial, self.path)
        self._forget()

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for p in {self.partial, self._raw}:
            try:
                os.unlink(p)
            except (FileNotFoundError, IsADirectoryError):
                pass  # none, or a directory that was never ours
        self._forget()

    def _forget(self) -> None:
        if self._staging is not None and self._noted is not None:
            self._staging.forget(self._noted)
            self._noted = None


def _read_only_fs(directory: str) -> bool:
    return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)


def _write_error(path: str, exc: OSError) -> StackvaultError:
    """The one line for a restore that cannot write its target (the staging file is removed by abort)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StackvaultError(f"no space left writing restore target {path}",
                               "free space there or restore to another file system; nothing was left behind")
    return StackvaultError(f"cannot write restore target {path}: {exc.strerror}",
                           "choose a place this user can write")


class DeviceTarget(RestoreTarget):
    """A block device (or a file standing in for one) written in place, e.g. a new Cinder volume.

    A device may hold old data, so zero blocks are zeroed explicitly: punched out where the kernel
    can (fallocate on files, BLKZEROOUT on devices), written as zeros otherwise.
    """

    zero_filled = False
    _BLKZEROOUT = 0x127F

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def open(self, size: int) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        end = os.lseek(self._fd, 0, os.SEEK_END)
        if 0 < end < size:
            os.close(self._fd)
            self._fd = None
            raise UsageError(f"restore target {self.path} holds {end} bytes, less than the disk's {size}",
                             "use a larger volume")
        self._is_device = stat.S_ISBLK(os.fstat(self._fd).st_mode)

    def zero(self, offset: int, length: int) -> None:
        assert self._fd is not None
        try:
            if self._is_device:
                # BLKZEROOUT wants whole logical sectors: the tail of a disk whose size is not a multiple
                # of 4 KiB is written below, not the whole run. Block offsets are always aligned.
                aligned = length - length % _SECTOR_ALIGN
                if aligned:
                    fcntl.ioctl(self._fd, self._BLKZEROOUT, struct.pack("QQ", offset, aligned))
                offset, length = offset + aligned, length - aligned
            else:
                punch_hole(self._fd, offset, length)
                return
        except OSError:
            pass
        piece = bytes(min(length, 4 << 20))
        for at in range(offset, offset + length, max(1, len(piece))):
            self.write(at, piece[: offset + length - at])

    def commit(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


#: What BLKZEROOUT ranges are rounded to: the largest logical sector size of common devices.
_SECTOR_ALIGN = 4096

#: How many bytes of neighbouring blocks a worker restores together from a packed repository: their
#: chunks lie near each other in a few packs, so they come with a few ranged reads instead of one
#: each (64 MiB: 74 GETs for the 614 MiB of the bench image, against 194 with 16 MiB; docs/storage.md).
PACKED_BATCH = 64 << 20
#: Restore workers on a packed repository: each holds up to MAX_READ (16 MiB) of one ranged read.
PACKED_THREADS = 6

#: The longest run of zero blocks zeroed with one call, so that progress moves on a huge empty disk.
ZERO_RUN_MAX = 256 << 20


class RestoreStats:
    def __init__(self) -> None:
        self.bytes_written = 0
        self.blocks_written = 0
        self.duration_s = 0.0


def restore_disk(repo: Repository, index: BlockIndex, target: RestoreTarget, *, workers: int = 2,
                 progress: Callable[[int], None] | None = None) -> RestoreStats:
    """Write a whole disk to `target`; on any error the target is aborted and the error re-raised."""
    stats = RestoreStats()
    started = time.monotonic()
    lock = threading.Lock()
    bs = index.block_size
    target.open(index.disk_size)

    def one(batch: list[tuple[int, bytes]]) -> None:
        for i, data in repo.iter_blocks([(i, digest, index.block_length(i)) for i, digest in batch]):
            target.write(i * bs, data)
            with lock:
                stats.bytes_written += len(data)
                stats.blocks_written += 1
            if progress is not None:
                progress(len(data))

    def zero_range(offset: int, end: int) -> None:
        """Bytes that read as zeros: a fresh target needs nothing (one progress report); a reused
        device is zeroed in runs of up to ZERO_RUN_MAX (one call each, so progress moves)."""
        step = max(1, end - offset if target.zero_filled else ZERO_RUN_MAX)
        for at in range(offset, end, step):
            length = min(end, at + step) - at
            if not target.zero_filled:
                target.zero(at, length)
            if progress is not None:
                progress(length)

    def data_blocks() -> Iterator[tuple[int, bytes]]:
        """The blocks that need a worker, from the index's runs. The zeros between them need none,
        so a nearly empty 4 TiB volume costs what its data costs, not eight million blocks."""
        at = 0
        for i, digest in index.data_blocks():
            zero_range(at * bs, i * bs)
            yield i, digest
            at = i + 1
        zero_range(at * bs, index.disk_size)

    try:
        # Restoring waits on reading many small chunk files more than on the CPU: more workers keep
        # the disk's queue full (the bench's profile), as many as 256 MiB of blocks in flight allow.
        threads = max(4, min(16, 4 * workers, (256 << 20) // (2 * bs)))
        if repo.packed:  # each worker makes few, large ranged reads: fewer of them keep the store busy
            threads = min(threads, PACKED_THREADS)
        pool = ThreadPoolExecutor(threads, thread_name_prefix="sv-restore")
        try:
            batches = batched(data_blocks(), max(1, PACKED_BATCH // bs) if repo.packed else 1)
            for _ in map_bounded(pool, one, batches, 2 * threads):  # re-raises the first error
                pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        target.commit()
    except BaseException:
        target.abort()
        raise
    stats.duration_s = time.monotonic() - started
    return stats
