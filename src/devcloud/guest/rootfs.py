"""The guest root disk: busybox, qemu-ga and lvm with their libraries and the freeze hooks on an ext4 partition.

The disk is the guest's real root filesystem (partition 1 of an MBR disk, like a cloud image), so
files the guest writes land on the disk a backup reads, and a restored server sees them again.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path

from devcloud.guest import tools

FILES = Path(__file__).parent / "files"
SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB, where fdisk puts the first partition
DISK_SIZE_MB = 256
LVM = Path("/usr/sbin/lvm")  # Debian's lvm2, the file-restore tests' guests' volume manager


class RootfsError(RuntimeError):
    """A tool needed to build the guest disk is missing or failed."""


def populate_root(root: Path, *, busybox: Path, qemu_ga: Path, agent_enabled: bool, image_name: str) -> None:
    """Lay out the guest's root filesystem under `root` (an empty directory)."""
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "lib", "lib64", "etc/qemu-ga/fsfreeze-hook.d",
                      "etc/devcloud", "var/log/qemu-ga", "var/run", "proc", "sys", "dev", "run", "mnt", "root", "tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)

    _install(busybox, root / "bin/busybox")
    for applet in _busybox_applets(busybox):
        link = root / "bin" / applet
        if applet not in ("busybox", "init") and not link.exists():
            link.symlink_to("busybox")
    # The seed document's example hook is a bash script; busybox ash runs it.
    _write(root / "bin/bash", '#!/bin/busybox sh\nexec /bin/busybox ash "$@"\n', 0o755)
    _install(FILES / "guest-init", root / "sbin/init")
    _install(FILES / "block-hotplug", root / "sbin/block-hotplug")

    # qemu-ga, and lvm: a guest activates the LVM volume groups on its disks (`lvm vgchange -ay`)
    for binary in (qemu_ga, LVM):
        _install(binary, root / "usr/sbin" / binary.name)
        for library in shared_libraries(binary):
            _install(library, root / library.relative_to("/"), mode=0o755)
    _install(FILES / "fsfreeze-hook", root / "etc/qemu-ga/fsfreeze-hook")
    _install(FILES / "test_hook.sh", root / "etc/qemu-ga/fsfreeze-hook.d/test_hook.sh")

    _write(root / "etc/hostname", f"{image_name}\n")
    _write(root / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    _write(root / "etc/group", "root:x:0:\n")
    _write(root / "etc/devcloud/image", f"{image_name}\n")
    if not agent_enabled:
        _write(root / "etc/devcloud/agent-disabled", "qemu-ga is installed but this image never starts it\n")


def make_disk(root: Path, dest_qcow2: Path, *, size_mb: int = DISK_SIZE_MB) -> None:
    """Write a qcow2 disk with an MBR and one ext4 partition holding `root` (atomically)."""
    raw = dest_qcow2.with_name(dest_qcow2.name + ".raw")
    total_sectors = size_mb * 1024 * 1024 // SECTOR
    with open(raw, "wb") as disk:
        disk.truncate(size_mb * 1024 * 1024)
        disk.write(_mbr(PARTITION_START, total_sectors - PARTITION_START))
    fs_kib = (total_sectors - PARTITION_START) * SECTOR // 1024
    # Eager inode table and journal init: otherwise the guest's ext4lazyinit thread keeps dirtying
    # blocks after boot and two backups of an idle guest differ.
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root),
          "-E", f"offset={PARTITION_START * SECTOR},lazy_itable_init=0,lazy_journal_init=0",
          str(raw), f"{fs_kib}k"], "mkfs.ext4")
    tmp = dest_qcow2.with_name(dest_qcow2.name + ".tmp")
    _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)], "qemu-img convert")
    raw.unlink()
    tmp.replace(dest_qcow2)


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries `binary` loads, dynamic loader included, as ldd resolves them here."""
    listing = _run(["ldd", str(binary)], f"ldd {binary}")
    found = []
    for line in listing.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.append(Path(match.group(1)))
    if not found:
        raise RootfsError(f"ldd found no libraries for {binary}; is it a dynamic executable?")
    return found


def _mbr(start: int, sectors: int) -> bytes:
    # One bootable-less Linux partition; CHS fields set to "use LBA" (0xFE 0xFF 0xFF).
    entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
    sector = bytearray(SECTOR)
    sector[440:444] = b"dcvg"  # disk identifier
    sector[446:462] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def _busybox_applets(busybox: Path) -> list[str]:
    return [name for name in _run([str(busybox), "--list"], "busybox --list").split() if "/" not in name]


def _install(src: Path, dest: Path, mode: int = 0o755) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)  # follows symlinks: the guest gets the real file under the link's name
    os.chmod(dest, mode)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def _run(argv: list[str], what: str) -> str:
    return tools.run(argv, what, RootfsError)
