"""The files inside a backed-up disk, read by libguestfs from an NBD export of it.

A backed-up disk is whatever its tenant wrote: its partition table, LVM metadata and file systems may
be crafted to crash or take over the kernel that parses them. So this proxy never mounts them itself:
libguestfs starts a small QEMU appliance with a kernel of its own, attaches the export read-only and
mounts the file systems in there; only file names, attributes and contents come back over its RPC
channel. A hostile file system can at worst crash or hang that appliance, which is bounded:

- memory: the appliance gets `memsize` MiB and nothing more of the proxy;
- time: a watchdog kills the appliance's QEMU after `timeout` seconds, whatever it was doing, and the
  call that waited on it fails with one line;
- nothing outlives the command: the appliance is shut down (or killed) on every exit path, and the
  only thing mounted is inside it.

File systems appear under one tree: a disk holding a single file system shows it at `/`; a disk with
several (partitions, LVM logical volumes) shows each under its device name, e.g. `/sda1`,
`/vg0/data` (`ls /` lists them). When libguestfs' inspection finds one operating system on a disk
with several, its root file system is shown at `/` instead (`/etc/hostname` is the guest's), beside
the other file systems under their device names: the paths a guest's owner knows. Inside the
appliance every file system stays mounted at its device name; paths are translated on the way in.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import resource
import shlex
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import GuestNameError, NotFoundError, SourceError, StackvaultError, UsageError
from . import child, pids
from .atomic import write_atomic

#: Appliance memory, MiB: enough for the kernel, the daemon and metadata of large file systems.
MEMSIZE_MIB = 512
#: The most entries `ls` and `find` return: bounds the command's memory and output.
MAX_ENTRIES = 100_000
#: The most bytes one `DiskFiles.read` returns: under libguestfs' message limit (2 to 4 MiB).
READ_MAX = 1 << 20
#: Default bound of one command's whole work in the appliance (launch included; QEMU TCG is slow).
TIMEOUT_S = 600.0


def guestfs_module() -> Any:
    """libguestfs' Python bindings, or one line saying how to get them."""
    try:
        import guestfs  # optional: only file restore needs it
    except ImportError:
        raise SourceError("file restore needs libguestfs' Python bindings (module guestfs), which this Python "
                          "cannot import", "install Debian's python3-guestfs, then run scripts/bootstrap") from None
    return guestfs


@dataclass(frozen=True)
class Entry:
    """One directory entry, as `ls` shows it and `get` restores it."""

    path: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    target: str = ""  # a symbolic link's target
    blocks: int = 0  # 512-byte blocks it occupies in the guest's file system (less than its size: sparse)

    @property
    def kind(self) -> str:
        return stat.filemode(self.mode)[0].replace("-", "f")

    def to_dict(self) -> dict:
        return {"path": self.path, "mode": stat.filemode(self.mode), "uid": self.uid, "gid": self.gid,
                "size": self.size, "mtime": self.mtime, **({"target": self.target} if self.target else {})}


@dataclass(frozen=True)
class Layout:
    """What the appliance finds on a disk before mounting it: its file systems {device: type} and the
    root file system's device of the one operating system inspection recognises.

    Finding them takes seconds under QEMU TCG (LVM scans, and inspection mounts every file system),
    and a backup never changes: `DiskFiles` keeps the layout of each backup's disk in the working
    directory and later commands start mounting at once. A kept layout only names devices; the
    appliance still mounts (and so checks) each of them."""

    filesystems: dict[str, str]
    os_root: str | None

    @classmethod
    def load(cls, path: str) -> Layout | None:
        """The layout kept in `path`; None when there is none, or it is not one (it is found again)."""
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
            found, root = data["filesystems"], data["os_root"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not (isinstance(found, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in found.items())
                and (root is None or (isinstance(root, str) and root in found))):
            return None
        return cls(found, root)

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        write_atomic(path, json.dumps({"filesystems": self.filesystems, "os_root": self.os_root}).encode())


class DiskFiles:
    """The file systems of one disk, mounted read-only inside a libguestfs appliance."""

    def __init__(self, nbd_socket: str, overlay: str, *, label: str, hv_dir: str, overlay_limit: int,
                 layout_file: str | None = None, memsize: int = MEMSIZE_MIB, timeout: float = TIMEOUT_S) -> None:
        """`nbd_socket`: the Unix socket of the disk's NBD export; `overlay` a new file's path in a
        private directory, which may grow to `overlay_limit` bytes; `hv_dir` a private directory of
        this proxy's for the QEMU wrapper; `label` names the disk in errors; `layout_file` where this
        disk's `Layout` is kept between commands."""
        guestfs = guestfs_module()
        self.label = label
        self._layout_file = layout_file
        self._overlay = overlay
        self._overlay_limit = overlay_limit
        self._os_root: str | None = None  # where the inspected OS's root file system is mounted
        self._timed_out = threading.Event()
        self._g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
        # Nothing is written (read-only mounts, a throw-away overlay): no sync at shutdown, which a
        # wedged file system would turn into an unmount that never returns.
        self._g.set_autosync(False)
        self._watchdog = threading.Timer(timeout, self._kill)
        self._watchdog.daemon = True
        self._timeout = timeout
        self._watchdog.start()
        try:
            self._g.set_memsize(memsize)
            self._g.set_hv(_scrubbing_hv(self._g.get_hv(), hv_dir))
            # The appliance's writes (a journal replay, say) land in a throw-away qcow2 overlay whose
            # backing file is the export, which refuses writes anyway. The overlay is made here rather
            # than by `add_drive(readonly=True)`, which probes the export while holding Python's GIL
            # and so would wait for ever on an export served by a thread of this very process.
            made = child.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                              "-b", f"nbd+unix:///?socket={nbd_socket}", overlay], child.MAP)
            if made.problem:
                raise StackvaultError(f"cannot attach {label} to the appliance: {made.problem}",
                                      "check that qemu-utils is installed")
            self._g.add_drive_opts(overlay, format="qcow2", readonly=False)
            self._call(self._g.launch)
            self._bound_overlay()
            self.filesystems = self._mount_all()
        except BaseException:
            self.close()
            raise

    def _bound_overlay(self) -> None:
        """No file the appliance's QEMU writes may grow past the overlay's limit (RLIMIT_FSIZE, set
        before anything is mounted, so before any journal is replayed): the kernel stops it there."""
        for pid in _qemu_children():
            try:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (self._overlay_limit, self._overlay_limit))
            except OSError:
                pass  # it is already gone: the mount fails, with its own error

    def _overlay_full(self) -> StackvaultError | None:
        """The error to give when the appliance stopped because its overlay reached its limit."""
        try:
            size = os.path.getsize(self._overlay)
        except OSError:
            return None
        if size < self._overlay_limit - (4 << 20):  # within a few qcow2 clusters of it
            return None
        return StackvaultError(f"the file systems of {self.label} need more than {self._overlay_limit >> 20} MiB "
                               f"of scratch space in {os.path.dirname(os.path.dirname(self._overlay))} to be read "
                               "(a journal to replay): the appliance was stopped",
                               "free space in the working directory's file system (the limit is its free space "
                               "less 64 MiB, at most 1 GiB), or restore the whole disk")

    def _kill(self) -> None:
        """The watchdog: kill the appliance's QEMU (a child of this process) wherever it hangs."""
        self._timed_out.set()
        self.stop()

    def stop(self) -> None:
        """Kill the appliance's QEMU now: a call under way on another thread fails at once, so an
        interrupted command need not wait for a download to end before it shuts down."""
        for pid in _qemu_children():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One libguestfs call; its error as one line (the watchdog's kill as a timeout)."""
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:
            if self._timed_out.is_set():
                raise StackvaultError(f"reading the file systems of {self.label} took longer than "
                                      f"{self._timeout:.0f} s: the appliance was stopped",
                                      "raise --timeout, or the disk may hold a hostile file system") from None
            raise self._overlay_full() or _guestfs_error(exc, self.label) from None
        except UnicodeDecodeError:
            where = " ".join(map(str, args))
            raise GuestNameError(f"a file name under {where or '/'} in {self.label} is not UTF-8",
                                 "extract its directory with `files BACKUP get DIR`, which keeps any name, "
                                 "or restore the whole disk") from None

    def _mount_all(self) -> dict[str, str]:
        """Mount every file system the appliance can read; {mount point: device}."""
        layout = Layout.load(self._layout_file) if self._layout_file else None
        if layout is None:
            found = self._call(self._g.list_filesystems)
            readable = [d for d, kind in found.items() if kind not in ("swap", "unknown", "")]
            layout = Layout(found, self._inspected_root() if len(readable) > 1 else None)
        found, os_root = layout.filesystems, layout.os_root
        devices = sorted(d for d, kind in found.items() if kind not in ("swap", "unknown", ""))
        if len(devices) == 1:
            places = {devices[0]: "/"}
        else:
            places = {d: "/" + d.removeprefix("/dev/") for d in devices}
            made: set[str] = set()
            for where in sorted(places.values()):  # /vg0 before /vg0/data
                parts = where.strip("/").split("/")
                for n in range(1, len(parts) + 1):
                    point = "/" + "/".join(parts[:n])
                    if point not in made:
                        self._call(self._g.mkmountpoint, point)
                        made.add(point)
        mounted: dict[str, str] = {}
        refused: dict[str, str] = {}  # device -> why the appliance's kernel would not mount it
        for device, where in places.items():
            try:
                self._g.mount_ro(device, where)
            except RuntimeError as exc:
                refused[device] = _mount_refusal(exc)
                if self._timed_out.is_set():
                    raise StackvaultError(f"reading the file systems of {self.label} took longer than "
                                          f"{self._timeout:.0f} s", "raise --timeout") from None
                full = self._overlay_full()
                if full is not None:
                    raise full from None
                continue  # a damaged or unsupported file system: the others are still readable
            mounted[where] = device
            if device == os_root:
                self._os_root = where
        if not mounted:
            seen = ", ".join(f"{d} {k or 'unknown'}" + (f" ({refused[d]})" if d in refused else "")
                             for d, k in sorted(found.items())) or "nothing"
            raise UsageError(f"{self.label} holds no file system that can be read (found: {seen})",
                             "restore the whole disk with `stackvault restore --to file:PATH` instead")
        if self._layout_file:
            try:
                layout.save(self._layout_file)
            except OSError:
                pass  # found again next time: only slower
        return mounted

    def _inspected_root(self) -> str | None:
        """The root file system's device of the one operating system inspection finds, if it finds
        exactly one (a disk with two is shown by device names only)."""
        try:
            roots = self._g.inspect_os()
        except RuntimeError:
            if self._timed_out.is_set():
                raise StackvaultError(f"reading the file systems of {self.label} took longer than "
                                      f"{self._timeout:.0f} s", "raise --timeout") from None
            return None  # nothing inspection recognises: device names, as for a data disk
        return roots[0] if len(roots) == 1 else None

    def _beside_root(self, path: str) -> bool:
        """`path` names another file system than the OS root's (or a directory holding one)."""
        return path != "/" and any(path == p or path.startswith(p + "/") or p.startswith(path + "/")
                                   for p in self.filesystems if p != self._os_root)

    def _inner(self, path: str) -> str:
        """A path as shown (the OS root at `/`) -> where it is mounted in the appliance."""
        if self._os_root is None or self._beside_root(path):
            return path
        return self._os_root if path == "/" else self._os_root + path

    def _others(self) -> list[str]:
        """Beside an OS root shown at `/`: the top directories of the other file systems."""
        return sorted({"/" + p.strip("/").split("/")[0] for p in self.filesystems if p != self._os_root})

    def close(self) -> None:
        """Shut the appliance down; the watchdog keeps watching until it is, since a shutdown can hang too."""
        try:
            self._g.shutdown()
        except RuntimeError:
            pass  # killed by the watchdog, or never launched
        self._watchdog.cancel()
        self._g.close()
        self.stop()  # a shutdown that failed leaves nothing running either

    def __enter__(self) -> DiskFiles:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def entry(self, path: str) -> Entry:
        path = _absolute(path)
        st = self._call(self._g.lstatns, self._inner(path))
        return self._entry(path, st)

    def _entry(self, path: str, st: dict) -> Entry:
        target = self._call(self._g.readlink, self._inner(path)) if stat.S_ISLNK(st["st_mode"]) else ""
        return Entry(path, st["st_mode"], st["st_uid"], st["st_gid"], st["st_size"], st["st_mtime_sec"], target,
                     st["st_blocks"])

    def ls(self, path: str) -> list[Entry]:
        """A directory's entries (or the one entry of a file)."""
        top = self.entry(path)
        if not stat.S_ISDIR(top.mode):
            return [top]
        inner = self._inner(top.path)
        names = sorted(self._call(self._g.ls, inner))
        _within_bound(len(names), top.path)
        stats = self._call(self._g.lstatnslist, inner, names) if names else []
        entries = [self._entry(posixpath.join(top.path, n), st) for n, st in zip(names, stats, strict=True)]
        if top.path == "/" and self._os_root is not None:
            entries += [self.entry(other) for other in self._others()]
        return entries

    def find(self, path: str, pattern: str | None = None) -> Iterator[str]:
        """Every path under `path` (whose name matches the glob `pattern`, when given)."""
        top = self.entry(path)
        found = self._call(self._g.find, self._inner(top.path))
        _within_bound(len(found), top.path)
        for rel in sorted(found):
            if pattern is None or fnmatch.fnmatchcase(posixpath.basename(rel), pattern):
                yield posixpath.join(top.path, rel.lstrip("/"))
        if top.path == "/" and self._os_root is not None:
            for other in self._others():
                if pattern is None or fnmatch.fnmatchcase(posixpath.basename(other), pattern):
                    yield other
                yield from self.find(other, pattern)

    def occupied(self, entry: Entry) -> int:
        """The bytes `entry` (a file, or a directory with everything below it) occupies in the guest's
        file system: what extracting it writes here at most, since holes stay holes."""
        if stat.S_ISDIR(entry.mode):
            return int(self._call(self._g.du, self._inner(entry.path))) * 1024
        return min(entry.size, entry.blocks * 512)

    def download(self, path: str, dest: str) -> None:
        """A regular file's bytes to `dest` (a path of this host, or /dev/fd/N)."""
        self._call(self._g.download, self._inner(path), dest)

    def read(self, path: str, offset: int, size: int) -> bytes:
        """At most `size` bytes (and READ_MAX) of a regular file from `offset`, in one call: a
        reader that pulls chunks, where `download` pushes the whole file to a path."""
        return self._call(self._g.pread, self._inner(path), min(size, READ_MAX), offset)

    def tar_out(self, path: str, dest: str) -> None:
        """A directory tree as a tar stream (numeric owners, modes, times) to `dest`."""
        self._call(self._g.tar_out, self._inner(path), dest, numericowner=True)


def _within_bound(count: int, path: str) -> None:
    if count > MAX_ENTRIES:
        raise UsageError(f"{path} holds {count} entries, more than the {MAX_ENTRIES} shown at once",
                         "list a deeper directory, or extract it with `files BACKUP get`")


def _scrubbing_hv(qemu: str, directory: str) -> str:
    """A wrapper that starts the appliance's QEMU with child.PASSED_ENV only.

    libguestfs starts QEMU with this process's environment, which may hold the repository's
    passphrase or cloud credentials; QEMU runs the hostile disk's guest side, so it gets none of
    them. The wrapper keeps one path and content (rewritten only when they change), so libguestfs'
    cache of QEMU's features stays valid.
    """
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(child.child_env().items()))
    script = f"#!/bin/sh\nexec /usr/bin/env -i {env} {shlex.quote(qemu)} \"$@\"\n".encode()
    path = os.path.join(directory, "guestfs-qemu")
    try:
        with open(path, "rb") as f:
            if f.read() == script:
                return path
    except OSError:
        pass
    write_atomic(path, script)
    os.chmod(path, 0o700)
    return path


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise UsageError(f"path {path!r} is not absolute", f"write /{path}")
    return posixpath.normpath(path) if path != "/" else "/"


def _guestfs_error(exc: RuntimeError, label: str) -> StackvaultError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "libguestfs failed"
    if "No such file or directory" in text:
        path = text.split(":")[1].strip() if text.count(":") >= 2 else "the path"
        return NotFoundError(f"{path} does not exist in {label}", "see `stackvault files BACKUP ls /`")
    if "Not a directory" in text:
        return UsageError(f"{text.split(': ', 1)[-1]} in {label}", "name a directory")
    return StackvaultError(f"reading the file systems of {label} failed: {text}",
                           "the disk may hold a damaged file system; restore the whole disk instead")


def _mount_refusal(exc: RuntimeError) -> str:
    """The kernel's reason in a failed mount's error ("can't read superblock", say): the one clue a
    user has to a damaged file system or a journal that cannot be replayed. The appliance's own
    device names are dropped: its disks are named in the order its kernel found them, which need
    not be the order shown to the user."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = re.sub(r" on /dev/\w+", "", text.rsplit(": ", 1)[-1]).rstrip(".")
    return reason[:160] or "the mount failed"


def _qemu_children() -> list[int]:
    """This process's children that run QEMU (the libguestfs appliance)."""
    me = os.getpid()
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                if not f.read().startswith(b"qemu"):
                    continue
        except OSError:
            continue
        if pids.parent(int(entry)) == me:
            found.append(int(entry))
    return found
