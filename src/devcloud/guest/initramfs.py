"""The guest initramfs: busybox-static, the virtio modules and an /init that mounts the root disk.

Written as a newc cpio archive by hand so that /dev/console can be a device node without root
privileges or a `cpio` binary, and so the archive is byte-for-byte reproducible (fixed mtimes).
"""

from __future__ import annotations

import gzip
import io
import stat
from pathlib import Path

from devcloud.guest.kernel import Kernel, modules_in_load_order, read_module

FILES = Path(__file__).parent / "files"


class CpioWriter:
    """Minimal writer of the `newc` cpio format the kernel unpacks into its rootfs."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"", nlink=1)
        return self._out.getvalue()

    def _entry(self, name: str, mode: int, data: bytes, rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        self._out.write(b"070701" + b"".join(b"%08x" % value for value in fields) + encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))


def build_initramfs(kernel: Kernel, busybox: Path, dest: Path) -> None:
    """Write a gzip-compressed initramfs for `kernel` to dest (atomically)."""
    modules = modules_in_load_order(kernel)
    cpio = CpioWriter()
    for directory in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "newroot"):
        cpio.directory(directory)
    # The kernel opens /dev/console for init's stdio before anything can mount devtmpfs.
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", (FILES / "initramfs-init").read_bytes(), 0o755)
    names = []
    for path in modules:
        name = path.name.split(".ko")[0]
        names.append(name)
        cpio.file(f"lib/modules/{name}.ko", read_module(path))
    cpio.file("etc/modules-load", ("\n".join(names) + "\n").encode())
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    tmp.replace(dest)
