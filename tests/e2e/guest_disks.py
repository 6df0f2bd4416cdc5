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
    cannot run nested guests), with a temporary directory of its own: what its commands leave there
    is theirs alone, whatever other `files` commands run on the machine."""

    @property
    def tmpdir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        # the appliance cache stays shared: under a private TMPDIR libguestfs would rebuild it
        return {**super().env(), "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "TMPDIR": str(self.tmpdir),
                "LIBGUESTFS_CACHEDIR": os.environ.get("LIBGUESTFS_CACHEDIR", "/var/tmp")}


def ext4_image(tree: Path, out: Path, size: int = 64 * MIB, *extra: str) -> Path:
    """A whole-disk ext4 holding `tree` (mke2fs copies holes as holes)."""
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", *extra, "-d", str(tree), str(out), f"{size // 1024}k"],
                   check=True, capture_output=True)
    return out


def partitioned_disk(out: Path, parts: list[Path], part_size: int) -> Path:
    """A raw disk with an MBR holding `parts` (file system images of `part_size` each) one after the
    other from 1 MiB on, as a partitioning tool lays out a guest's disk."""
    starts = [MIB + n * part_size for n in range(len(parts))]
    with open(out, "wb") as f:
        f.truncate(starts[-1] + part_size + MIB)
    table = "label: dos\n" + "".join(f"start={s // 512}, size={part_size // 512}, type=83\n" for s in starts)
    subprocess.run(["sfdisk", "-q", str(out)], input=table.encode(), check=True, capture_output=True)
    with open(out, "r+b") as d:
        for start, part in zip(starts, parts, strict=True):
            d.seek(start)
            d.write(part.read_bytes())
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


def leftovers(sv: GuestStackvault) -> tuple[set[str], set[int]]:
    """What `sv`'s files commands could leave behind: their socket and overlay directories, and
    running appliances. An appliance's QEMU names its overlay (in the working directory) and
    libguestfs' temporary directory (in `sv`'s TMPDIR) on its command line: QEMUs naming `sv`'s root
    are its commands' own, whichever process they were left to."""
    dirs = {str(p) for parent in (sv.tmpdir, sv.workdir / "tmp") if parent.exists()
            for p in parent.glob("sv-files-*")}
    mine = f"{sv.root}/".encode()
    qemus = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # it ended meanwhile
        if comm.startswith(b"qemu") and mine in cmdline:
            qemus.add(int(pid))
    return dirs, qemus
