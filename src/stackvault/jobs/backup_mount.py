"""`stackvault mount`: the repository's backups as a read-only FUSE file system of raw disk images.

    MOUNTPOINT/<server>--<first 8 of its id>/<backup-id>/<disk>.raw
    MOUNTPOINT/<server>--<first 8 of its id>/latest -> <newest backup-id>

Backup ids begin with their UTC time, so names sort by time. A server is the backed-up server's name
and id (a volume's for volume backups; the first disk's name alone for `--source` backups): names
are the tenants' to choose, ids are not. Reads of an image
go through a `DiskReader` (bounded block cache, read-ahead for sequential reads, holes answered
without a repository read), so a mounted disk works the same on every repository kind and never
serves a byte that fails its check (the read gets EIO instead). Images are mounted `direct_io`:
the reader's cache is the only one (see `mount`).

The binding is mfusepy: the maintained fork of fusepy, ctypes over the installed libfuse 3 (no
compiler, no build of its own, so it installs from PyPI like the other dependencies), with the
threaded high-level API the thread-safe reader suits. pyfuse3 needs trio and a C build against
libfuse3-dev, or Debian's package with trio's whole dependency tree linked into the venv.

The command holds the repository's read lock while mounted, so gc waits. It runs in the foreground;
libfuse turns Ctrl-C and SIGTERM into a clean unmount, after which the command returns.
"""

from __future__ import annotations

import ctypes.util
import errno
import os
import stat
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..engine.diskreader import DiskReader
from ..engine.manifest import BackupRecord, DiskRecord
from ..engine.repository import Repository
from ..errors import StackvaultError, UsageError, warn
from .context import JobContext

#: Disk readers kept open at once when idle (each with its own block cache): bounds the mount's memory.
OPEN_READERS = 4
#: What libfuse 3's fuse_main returns when a signal (Ctrl-C, SIGTERM) ended its loop: a clean unmount.
_LOOP_ENDED_BY_SIGNAL = 8
#: Each reader's block cache.
CACHE_BYTES = 32 << 20
#: The I/O size an image advertises (st_blksize): readers that size their buffers by it (coreutils,
#: Python's open) ask in requests this large, each one FUSE round trip under `direct_io`.
IO_SIZE = 1 << 20


@dataclass(frozen=True)
class Image:
    backup_id: str
    disk: DiskRecord
    mtime_ns: int


def server_name(record: BackupRecord) -> str:
    """The directory of a backup's server: `<name>--<first 8 of its id>` for a cloud server or volume.

    Display names are the tenants' to choose: by name alone, a tenant naming a server like another
    project's would merge into its directory, and `latest` could point at the tenant's backup. A
    `--source` backup (the operator's own file or device) has no id and keeps its disk's name.
    """
    src = record.source or {}
    thing = src.get("server") or src.get("volume") or {}
    name = str(thing.get("name") or (record.disks[0].name if record.disks else record.backup_id))
    uid = str(thing.get("id") or "")
    return _file_name(f"{name}--{uid[:8]}" if uid else name)


def _file_name(name: str) -> str:
    """`name` as one path component: no `/` or NUL, never empty, `.` or `..`."""
    name = name.replace("/", "_").replace("\0", "_")
    return f"_{name}" if name in ("", ".", "..") else name


def _mtime_ns(record: BackupRecord) -> int:
    try:
        return int(datetime.fromisoformat(record.created).timestamp() * 1e9)
    except ValueError:
        return 0


def layout(records: list[BackupRecord]) -> dict[str, dict[str, dict[str, Image]]]:
    """{server: {backup id: {file name: image}}}, from the repository's backup records."""
    tree: dict[str, dict[str, dict[str, Image]]] = {}
    for r in sorted(records, key=lambda r: r.backup_id):
        files: dict[str, Image] = {}
        clashing: set[str] = set()
        for d in r.disks:
            name = _image_name(d.name)
            if name in files:
                clashing.add(name)
            files[name] = Image(r.backup_id, d, _mtime_ns(r))
        for name in sorted(clashing):  # which disk is which cannot be told: neither is shown
            warn(f"backup {r.backup_id} has several disks named {name}: they are left out of the mount")
            del files[name]
        tree.setdefault(server_name(r), {})[r.backup_id] = files
    return tree


def _image_name(disk: str) -> str:
    name = _file_name(disk)
    return name if name.endswith(".raw") else f"{name}.raw"


def _fuse() -> Any:
    """mfusepy over libfuse 3 where it is installed: mfusepy takes libfuse 2 when both are (the first
    `find_library` match), whose operations have no `lseek`, so SEEK_DATA/SEEK_HOLE would not reach
    the mount. FUSE_LIBRARY_NAME, set before the first import, is mfusepy's own way to choose."""
    if "FUSE_LIBRARY_NAME" not in os.environ and ctypes.util.find_library("fuse3"):
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy
    except (ImportError, OSError) as exc:  # OSError: libfuse itself is missing
        raise UsageError(f"mount needs libfuse 3 and the mfusepy package: {exc}",
                         "install Debian's fuse3 and run scripts/bootstrap") from None
    return mfusepy


def make_operations(repo: Repository, tree: dict[str, dict[str, dict[str, Image]]]) -> Any:
    mfusepy = _fuse()

    class BackupFS(mfusepy.Operations):  # type: ignore[name-defined]  # mfusepy has no types
        """Read-only: every call that would change something gets EROFS from libfuse's `ro` mount."""

        use_ns = True

        def __init__(self) -> None:
            self._readers: OrderedDict[tuple[str, str], DiskReader] = OrderedDict()
            self._users: Counter[tuple[str, str]] = Counter()  # reads under way, per open reader
            self._lock = threading.Lock()
            self._uid, self._gid = os.getuid(), os.getgid()
            self.was_mounted = False

        def init(self, path: str) -> None:
            self.was_mounted = True

        def _find(self, path: str) -> tuple[str, ...]:
            parts = tuple(p for p in path.split("/") if p)
            if len(parts) >= 1 and parts[0] not in tree:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if len(parts) >= 2 and parts[1] != "latest" and parts[1] not in tree[parts[0]]:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if len(parts) >= 2 and parts[1] == "latest" and len(parts) > 2:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if len(parts) == 3 and parts[2] not in tree[parts[0]][parts[1]]:
                raise mfusepy.FuseOSError(errno.ENOENT)
            if len(parts) > 3:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return parts

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            parts = self._find(path)
            base = {"st_uid": self._uid, "st_gid": self._gid, "st_nlink": 1}
            if len(parts) == 3:
                image = tree[parts[0]][parts[1]][parts[2]]
                return {**base, "st_mode": stat.S_IFREG | 0o400, "st_size": image.disk.size,
                        "st_mtime": image.mtime_ns, "st_ctime": image.mtime_ns, "st_atime": image.mtime_ns,
                        "st_blocks": (image.disk.size + 511) // 512, "st_blksize": IO_SIZE}
            if len(parts) == 2 and parts[1] == "latest":
                target = max(tree[parts[0]])
                return {**base, "st_mode": stat.S_IFLNK | 0o777, "st_size": len(target)}
            return {**base, "st_mode": stat.S_IFDIR | 0o500, "st_nlink": 2}

        def readdir(self, path: str, fh: int) -> list[str]:
            parts = self._find(path)
            if len(parts) == 0:
                names = sorted(tree)
            elif len(parts) == 1:
                names = [*sorted(tree[parts[0]]), "latest"]
            elif len(parts) == 2 and parts[1] != "latest":
                names = sorted(tree[parts[0]][parts[1]])
            else:
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return [".", "..", *names]

        def readlink(self, path: str) -> str:
            parts = self._find(path)
            if len(parts) != 2 or parts[1] != "latest":
                raise mfusepy.FuseOSError(errno.EINVAL)
            return max(tree[parts[0]])

        def open(self, path: str, flags: int) -> int:
            parts = self._find(path)
            if len(parts) != 3:
                raise mfusepy.FuseOSError(errno.EISDIR)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise mfusepy.FuseOSError(errno.EROFS)
            return 0

        @contextmanager
        def _reader(self, parts: tuple[str, ...]) -> Iterator[DiskReader]:
            """The image's reader, open while the block runs: a reader in use is never evicted
            (closing it would cancel the fetches its reads wait on), so the open readers may exceed
            OPEN_READERS by the reads under way, and fall back to it as they end."""
            image = tree[parts[0]][parts[1]][parts[2]]
            key = (image.backup_id, image.disk.name)
            with self._lock:
                reader = self._readers.get(key)
                if reader is not None:
                    self._readers.move_to_end(key)
                    self._users[key] += 1
            if reader is None:
                opened = DiskReader(repo, repo.get_index(image.disk), cache_bytes=CACHE_BYTES)
                with self._lock:
                    reader = self._readers.setdefault(key, opened)  # another read may have opened it meanwhile
                    self._readers.move_to_end(key)
                    self._users[key] += 1
                if reader is not opened:
                    opened.close()
            try:
                yield reader
            finally:
                with self._lock:
                    self._users[key] -= 1
                    if not self._users[key]:
                        del self._users[key]
                    idle = [k for k in self._readers if k not in self._users]
                    evicted = [self._readers.pop(k) for k in idle[: max(0, len(self._readers) - OPEN_READERS)]]
                for old in evicted:  # outside the lock: a close waits for the reader's fetches under way
                    old.close()

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            try:
                with self._reader(self._find(path)) as reader:
                    return reader.read(offset, size)
            except StackvaultError as exc:  # a damaged chunk or an unreadable store: an I/O error
                warn(f"reading {path} at {offset}: {exc}")
                raise mfusepy.FuseOSError(errno.EIO) from None

        def lseek(self, path: str, offset: int, whence: int, fh: int) -> int:
            """SEEK_DATA and SEEK_HOLE from the block index (the kernel answers the other kinds itself),
            so `cp --sparse`, `qemu-img` and backup tools skip an image's holes without reading them."""
            if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
                raise mfusepy.FuseOSError(errno.EINVAL)
            with self._reader(self._find(path)) as reader:
                if offset < 0 or offset >= reader.size:
                    raise mfusepy.FuseOSError(errno.ENXIO)
                found = reader.data_from(offset) if whence == os.SEEK_DATA else reader.hole_from(offset)
            if found is None:
                raise mfusepy.FuseOSError(errno.ENXIO)
            return found

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

        def close_all(self) -> None:
            with self._lock:
                for reader in self._readers.values():
                    reader.close()
                self._readers.clear()

    return BackupFS()


def _fuse_with_lseek(mfusepy: Any) -> Any:
    """mfusepy's FUSE, with the wrapper of libfuse 3's `lseek` callback it lacks (its operations
    table has the slot; libfuse 3.8 and later, Linux 4.19 and later pass SEEK_DATA/SEEK_HOLE on)."""

    class FUSE(mfusepy.FUSE):
        def lseek(self, path: bytes | None, offset: int, whence: int, fip: Any) -> int:
            fh = fip.contents if self.raw_fi else fip.contents.fh
            name = None if path is None else path.decode(self.encoding, self.errors)
            return int(self.operations.lseek(name, offset, whence, fh))

    return FUSE


def mount(ctx: JobContext, mountpoint: str, server: str | None, backup: str | None) -> dict:
    """Mount until unmounted (Ctrl-C, SIGTERM, `fusermount3 -u`); returns what was shown."""
    if server and backup:
        raise UsageError("mount shows one server or one backup, not both", "drop --server or the backup id")
    where = os.path.abspath(mountpoint)
    if not os.path.isdir(where):
        raise UsageError(f"mount point {where} is not a directory", "create an empty directory first")
    mfusepy = _fuse()
    repo = ctx.repo
    with ctx.lock("read", f"mount {where}") as lock:
        if lock.warning:
            warn(lock.warning)
        records = [repo.get_backup(repo.resolve(backup))] if backup else repo.backups()
        tree = layout(records)
        if server:
            shown = {d: b for d, b in tree.items() if d == server or d.rpartition("--")[0] == server}
            if not shown:
                raise UsageError(f"no backups of server {server!r}", f"servers: {', '.join(sorted(tree)) or 'none'}")
            tree = shown
        ops = make_operations(repo, tree)
        try:
            # direct_io: reads reach the reader as the caller asked for them (up to libfuse 3's 1 MiB)
            # instead of through the page cache in read-ahead windows of 128 KiB. The reader has its
            # own block cache and read-ahead; the page cache's second copy made a sequential read of
            # a 10 GiB sparse image 4x slower (8 round trips per MiB, and page reclaim once memory
            # filled), for a data set read once. The cost: tiny reads are no longer gathered (IO_SIZE
            # tells readers what to ask for), and a shared mmap of an image is refused (ENODEV).
            _fuse_with_lseek(mfusepy)(ops, where, foreground=True, ro=True, nothreads=False, fsname="stackvault",
                                      subtype="stackvault", default_permissions=True, direct_io=True)
        except RuntimeError as exc:
            if not (ops.was_mounted and exc.args == (_LOOP_ENDED_BY_SIGNAL,)):
                raise StackvaultError(f"cannot mount at {where}: {exc}",
                                      "check that the directory is empty and that /dev/fuse is usable") from None
        finally:
            ops.close_all()
    return {"mountpoint": where, "servers": sorted(tree), "backups": sum(len(b) for b in tree.values()),
            "status": "unmounted"}

