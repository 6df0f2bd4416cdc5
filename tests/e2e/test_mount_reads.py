"""Reads of a mounted sparse image at any size and offset give the backed-up bytes: reads inside a
hole are answered without the repository, reads across a hole's edge are not, and the image tells
readers to ask in large requests (each read is one FUSE round trip: images are mounted direct_io)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .helpers import KIB, MIB, Stackvault, make_sparse_image
from .test_mount import mounted

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")

SIZE = 24 * MIB + 5 * KIB  # a disk whose end is not on a block boundary
EXTENTS = [(3 * MIB + 100, 300 * KIB), (11 * MIB, 2 * MIB), (SIZE - 7 * KIB, 7 * KIB)]


def test_reads_at_any_size_and_offset_give_the_backed_up_bytes(repo: Stackvault, tmp_path: Path,
                                                              rng: random.Random) -> None:
    disk = make_sparse_image(tmp_path / "sparse.raw", SIZE, rng, [(a, n, "random") for a, n in EXTENTS])
    want = disk.read_bytes()
    bid = repo.backup(disk)["backup_id"]
    mnt = tmp_path / "mnt"
    with mounted(repo, mnt):
        image = mnt / "sparse.raw" / bid / "sparse.raw"
        assert image.stat().st_blksize >= MIB
        fd = os.open(image, os.O_RDONLY)
        try:
            for size in (4 * KIB, 128 * KIB + 17, MIB, 4 * MIB):  # whole-image passes at each request size
                got = bytearray()
                while chunk := os.pread(fd, size, len(got)):
                    got += chunk
                assert got == want, f"sequential reads of {size} bytes"
            for _ in range(200):  # inside holes, inside data, across edges, past the end
                at = rng.randrange(SIZE + 10)
                size = rng.choice([1, 511, 4 * KIB, 200 * KIB, MIB + 3])
                assert os.pread(fd, size, at) == want[at : at + size], (at, size)
        finally:
            os.close(fd)
