"""Disk sources: what the engine reads blocks from.

A source tells its size, the extents that may hold data (everything else reads as zeros and is never
read), and reads bytes by guest offset. Raw files and block devices are read directly, with holes
found by SEEK_DATA/SEEK_HOLE; qcow2 and other formats are read through `qemu-nbd` with extents from
`qemu-img map`, so the engine sees exactly what the guest sees.

A source's format is what the operator names, never what its bytes say: a guest owns the bytes of
its disk and may write any image header there, for example a qcow2 header whose backing file is a
file of the proxy. So `file:PATH` is raw, and an image read through qemu never follows a reference
to another file (backing file, external data file, vmdk extents) unless the operator asks for it.
"""

from __future__ import annotations

import abc
import errno
import json
import os
import stat
from dataclasses import dataclass, field

from ..config import CephSettings
from ..errors import SourceError
from . import child
from .nbd import NbdExport


@dataclass
class DiskSource(abc.ABC):
    """One disk to back up. `key` is its stable identity, the name of its working state."""

    path: str
    name: str
    key: str
    size: int = 0
    format: str = "raw"
    meta: dict = field(default_factory=dict)
    owned_files: list[str] = field(default_factory=list)  # temporary copies, removed on close
    #: How the disk is read and why, when whoever opened it chose among several ways (a cloud volume
    #: straight from Ceph or through a temporary volume): the report's `read`, under what the engine adds.
    read_note: dict = field(default_factory=dict)
    #: Whether several threads may read at any offsets at once. A disk answers a queue of reads far
    #: faster than one read at a time (4 readers read the bench image in 0.77 s, one in 1.2-1.9 s);
    #: streams (a download, an NBD socket) must be read in order by one thread.
    parallel_reads = False
    #: Whether the source can list the extents written since an earlier backup of it
    #: (`changed_extents`, engine/changed.py): an RBD snapshot can, a file cannot.
    lists_changes = False

    @abc.abstractmethod
    def data_extents(self) -> list[tuple[int, int]]:
        """(offset, length) regions that may hold non-zero data, sorted; the rest reads as zero."""

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes: ...

    def finish(self) -> None:
        """Called after the last block was read, before anything commits: a source that streams
        its data (a download) checks here that it got every byte right."""

    def close(self) -> None:
        for path in self.owned_files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.owned_files.clear()

    def __enter__(self) -> DiskSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawSource(DiskSource):
    """A raw image file or block device, read with pread; holes are skipped, never read."""

    parallel_reads = True

    def open(self) -> None:
        self._fd = open_disk(self.path)
        st = os.fstat(self._fd)
        self._is_device = stat.S_ISBLK(st.st_mode)
        self.size = os.lseek(self._fd, 0, os.SEEK_END) if self._is_device else st.st_size
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead window

    def data_extents(self) -> list[tuple[int, int]]:
        if self._is_device:
            return [(0, self.size)] if self.size else []
        extents: list[tuple[int, int]] = []
        pos = 0
        while pos < self.size:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                if exc.errno == errno.EINVAL:  # file system without SEEK_DATA: read everything
                    return [(0, self.size)]
                raise
            end = os.lseek(self._fd, start, os.SEEK_HOLE)
            extents.append((start, min(end, self.size) - start))
            pos = end
        return extents

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise SourceError(f"source {self.path} ended early at offset {offset + len(data)} (it shrank?)",
                              "back it up again once it is stable")
        return data

    def close(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None  # type: ignore[assignment]  # closed: never used again
        super().close()


QEMU_FORMATS = ("qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed")
FOLLOW_SUFFIX = "+backing"  # `qcow2+backing:PATH`: the operator trusts the image's references to other files
#: The largest disk an image may claim. A tenant's image says its own virtual size, and a few bytes
#: claiming exabytes would make the engine size its indexes for them; real disks stay well below.
MAX_VIRTUAL_SIZE = 64 << 40


def open_disk(path: str) -> int:
    """A read-only descriptor of a regular file or block device; anything else is refused with why.

    O_NONBLOCK so that a named pipe cannot hang the open; the type is checked on the open
    descriptor, so what is read is what was checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(f"cannot open source {path}: {exc.strerror}",
                          "check the path and that this user may read it") from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        os.set_blocking(fd, True)
        return fd
    os.close(fd)
    what = ("a directory" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a disk")
    raise SourceError(f"source {path} is {what}", "name a disk image file or block device")


class QemuSource(DiskSource):
    """Any format qemu reads (qcow2, vmdk, ...), by guest offsets through qemu-nbd.

    qemu opens the image with its backing file cut off (`"backing": null`), and an image that names
    another file (backing file, external data file, extents) is refused unless `follow` says the
    operator trusts it; every qemu tool runs constrained (engine.child).
    """

    follow: bool = False

    def open(self) -> None:
        if self.format not in QEMU_FORMATS:  # e.g. a disk_format a tenant set on a Glance image
            raise SourceError(f"image refused: {self.path} has format {self.format!r}, not one of "
                              f"{', '.join(QEMU_FORMATS)}", "convert the image to qcow2 or raw")
        os.close(open_disk(self.path))  # a FIFO or device node never reaches qemu
        info = _qemu_img_json(["info", "-U", self._spec()], self.path, child.PROBE)
        if not isinstance(info, dict) or not isinstance(info.get("virtual-size"), int):
            raise SourceError(f"image refused: qemu-img info on {self.path} gave no virtual size",
                              "check the image with `qemu-img check`")
        refs = references(info, self.path)
        if refs and not self.follow:
            raise SourceError(f"image refused: {self.format} image {self.path} refers to another file, {refs[0]}",
                              "convert it to a self-contained image (qemu-img convert), or name it "
                              f"{self.format}{FOLLOW_SUFFIX}:PATH if you trust every file it names")
        self.size = info["virtual-size"]
        if not 0 <= self.size <= MAX_VIRTUAL_SIZE:
            raise SourceError(f"image refused: {self.path} claims a virtual size of {self.size} bytes, "
                              f"more than {MAX_VIRTUAL_SIZE >> 40} TiB", "check where the image comes from")
        self._extents = self._map()
        self._nbd = NbdExport(self._spec(), self.path)

    def _spec(self) -> str:
        """The image for qemu tools as JSON options: the format is given, never probed, and unless
        the operator follows references the backing file is cut off."""
        proto = "host_device" if stat.S_ISBLK(os.stat(self.path).st_mode) else "file"
        opts: dict = {"driver": self.format, "file": {"driver": proto, "filename": self.path}}
        if not self.follow:
            opts["backing"] = None
        return "json:" + json.dumps(opts)

    def _map(self) -> list[tuple[int, int]]:
        """Extents that may hold data, read line by line from a capped `qemu-img map`; an image too
        fragmented for the cap is read whole (its zeros are still found by the engine)."""
        out = _qemu_img_run(["map", "-U", self._spec()], self.path, child.MAP)
        if out.truncated:
            return [(0, self.size)] if self.size else []
        extents: list[tuple[int, int]] = []
        for line in out.stdout.splitlines():
            line = line.strip().lstrip(b"[").rstrip(b"],")
            if not line:
                continue
            try:
                ext = json.loads(line)
                start, length, zero = int(ext["start"]), int(ext["length"]), bool(ext.get("zero", False))
            except (ValueError, KeyError, TypeError):
                raise SourceError(f"image refused: qemu-img map of {self.path} is not understood",
                                  "check the image with `qemu-img check`") from None
            if zero or length <= 0:
                continue
            if extents and sum(extents[-1]) == start:
                extents[-1] = (extents[-1][0], extents[-1][1] + length)
            else:
                extents.append((start, length))
        return extents

    def data_extents(self) -> list[tuple[int, int]]:
        return list(self._extents)

    def read(self, offset: int, length: int) -> bytes:
        return self._nbd.read(offset, length)

    def close(self) -> None:
        nbd = getattr(self, "_nbd", None)
        if nbd is not None:
            nbd.close()
            self._nbd = None  # type: ignore[assignment]  # closed: never used again
        super().close()


def references(info: dict, path: str) -> list[str]:
    """Other files an image names (from `qemu-img info --output=json`): backing file, external data
    file, extents of a multi-file vmdk."""
    refs = [info[k] for k in ("backing-filename", "full-backing-filename") if isinstance(info.get(k), str)]
    data = (info.get("format-specific") or {}).get("data") or {}
    if isinstance(data, dict):
        if isinstance(data.get("data-file"), str):
            refs.append(data["data-file"])
        for ext in data.get("extents") or []:
            name = ext.get("filename") if isinstance(ext, dict) else None
            if isinstance(name, str) and os.path.realpath(name) != os.path.realpath(path):
                refs.append(name)
    return refs


def _qemu_img_run(args: list[str], path: str, limits: child.Limits) -> child.Finished:
    try:
        out = child.run(["qemu-img", *args, "--output=json"], limits)
    except FileNotFoundError:
        raise SourceError("qemu-img is not installed", "install Debian's qemu-utils (make bootstrap does)") from None
    if out.problem and not out.truncated:
        raise SourceError(f"image refused: qemu-img cannot read {path}: {out.problem}",
                          "check the image and its format")
    return out


def _qemu_img_json(args: list[str], path: str, limits: child.Limits) -> object:
    out = _qemu_img_run(args, path, limits)
    try:
        return json.loads(out.stdout) if not out.truncated else None
    except ValueError:
        return None


def source_path(path: str) -> str:
    """The absolute path of a source, which must be text, and so must the file it resolves to: both
    are stored in backup records and the catalog as UTF-8, so a path that is not would make every
    later listing of the repository fail."""
    for name in (path, os.path.realpath(path)):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise SourceError(f"source path {shown!r} is not valid UTF-8",
                              "rename the file or link it under a UTF-8 name") from None
    return os.path.abspath(path)


def open_source(spec: str, ceph: CephSettings | None = None) -> DiskSource:
    """A source from a CLI spec: `file:PATH` or a plain PATH (raw), `raw:PATH`, `qcow2:PATH` (or
    another qemu format), `qcow2+backing:PATH` (following the image's references to other files),
    `rbd:POOL/IMAGE@SNAP` (an RBD snapshot, in the cluster `ceph` names)."""
    kind, sep, path = spec.partition(":")
    if kind == "rbd" and sep:
        from .rbdsource import open_rbd  # librbd only for rbd sources

        ceph = ceph or CephSettings()
        return open_rbd(path, ceph.conf, ceph.client, ceph.keyring)
    if not sep or len(kind) == 1:  # a bare path (or a Windows-like drive letter, never here)
        kind, path = "file", spec
    if not path:
        raise SourceError(f"source {spec!r} names no path", "write it as file:/path/to/disk.img")
    fmt, follow = kind.removesuffix(FOLLOW_SUFFIX), kind.endswith(FOLLOW_SUFFIX)
    if fmt == "file":
        fmt = "raw"
    if fmt not in ("raw", *QEMU_FORMATS) or (follow and fmt == "raw"):
        raise SourceError(f"unknown source kind {kind!r} in {spec!r}",
                          "use file:PATH (raw), raw:PATH, qcow2:PATH, qcow2+backing:PATH or rbd:POOL/IMAGE@SNAP")
    path = source_path(path)
    real = os.path.realpath(path)
    source: DiskSource
    if fmt == "raw":
        source = RawSource(path=path, name=os.path.basename(path), key=f"file:{real}", format=fmt)
    else:
        source = QemuSource(path=path, name=os.path.basename(path), key=f"file:{real}", format=fmt)
        source.follow = follow
    try:
        source.open()
    except BaseException:
        source.close()
        raise
    return source
