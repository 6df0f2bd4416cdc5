"""What the file-restore tests share: ext4 disks made from a tree of files, a repository whose
`files` commands run libguestfs under TCG, small real file systems to extract into, and a look at
what a `files` command could leave behind."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .helpers import MIB, Stackvault

#: What one `files` command may take at most on a loaded machine (the appliance alone: ~15 s under TCG).
RUN_TIMEOUT = 600


class GuestStackvault(Stackvault):
    """A repository whose commands start libguestfs' appliance without KVM (the CI machine's /dev/kvm
    cannot run nested guests)."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


def ext4_image(tree: Path, out: Path, size: int = 64 * MIB, *extra: str) -> Path:
    """A whole-disk ext4 holding `tree` (mke2fs copies holes as holes)."""
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", *extra, "-d", str(tree), str(out), f"{size // 1024}k"],
                   check=True, capture_output=True)
    return out


def sparse_file(path: Path, size: int, data_at: dict[int, bytes]) -> Path:
    """A file of `size` bytes holding `data_at` {offset: bytes}, holes elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in data_at.items():
            f.seek(offset)
            f.write(data)
    return path


@contextmanager
def tmpfs(where: Path, size: int) -> Iterator[Path]:
    """A real file system of `size` bytes mounted at `where` (needs root)."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def leftovers() -> tuple[set[str], int]:
    """What a files command could leave behind: its socket directories, and running QEMU appliances."""
    dirs = {n for n in os.listdir("/tmp") if n.startswith("sv-files-")}
    qemus = subprocess.run(["pgrep", "-c", "-f", "qemu-system.*guestfs"], capture_output=True, text=True)
    return dirs, int(qemus.stdout.strip() or 0)
