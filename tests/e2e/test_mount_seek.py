"""A mounted image answers SEEK_DATA and SEEK_HOLE from its backup's block index, so `cp --sparse`
and other tools skip its holes: the copy equals the image and occupies about its data."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from .helpers import BLOCK, KIB, MIB, Stackvault, make_sparse_image, sha256_file
from .test_mount import mounted

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")

SIZE = 64 * MIB
EXTENTS = [(0, 256 * KIB), (10 * MIB, 700 * KIB), (40 * MIB + 3 * KIB, 64 * KIB)]


def _blocks(start: int, length: int) -> tuple[int, int]:
    """[start, end) of an extent rounded out to whole repository blocks."""
    return start // BLOCK * BLOCK, -(-(start + length) // BLOCK) * BLOCK


def test_seek_data_and_hole_follow_the_backup(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    disk = make_sparse_image(tmp_path / "sparse.raw", SIZE, rng, [(a, n, "random") for a, n in EXTENTS])
    bid = repo.backup(disk)["backup_id"]
    mnt = tmp_path / "mnt"
    with mounted(repo, mnt):
        image = mnt / "sparse.raw" / bid / "sparse.raw"
        fd = os.open(image, os.O_RDONLY)
        try:
            found = []
            at = 0
            while True:
                try:
                    start = os.lseek(fd, at, os.SEEK_DATA)
                except OSError:  # ENXIO: only holes follow
                    break
                at = os.lseek(fd, start, os.SEEK_HOLE)
                found.append((start, at))
        finally:
            os.close(fd)
        assert found == [_blocks(a, n) for a, n in EXTENTS]
        copy = tmp_path / "copy.raw"
        subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
        assert sha256_file(copy) == sha256_file(disk)
        assert copy.stat().st_blocks * 512 <= 2 * MIB, "the holes stayed holes"
