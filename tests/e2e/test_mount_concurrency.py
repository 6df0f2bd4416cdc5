"""`mount` read by more images at once than it keeps disk readers open: every read returns the
image's bytes. Opening a fifth image evicts the least recently used reader; a reader another thread
is reading from must not be closed under it (its fetches would be cancelled, the read an EIO).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pytest

from stackvault.jobs.backup_mount import OPEN_READERS

from .helpers import KIB, MIB, Stackvault, make_sparse_image, sha256_file
from .test_mount import mounted

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")]

IMAGES = 2 * OPEN_READERS + 2
PASSES = 3


def _read_through(path: Path) -> str:
    """The image read front to back in FUSE's 128 KiB requests, each open a fresh one (no page cache)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(128 * KIB):
            h.update(chunk)
    return h.hexdigest()


def test_more_concurrent_readers_than_the_mount_keeps(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    expected = {}
    for n in range(IMAGES):
        disk = make_sparse_image(tmp_path / f"d{n}.raw", 6 * MIB, rng, [(0, 6 * MIB, "random")])
        expected[disk.name] = sha256_file(disk)
        repo.backup(disk)
    failures: list[str] = []

    def reader(name: str, mnt: Path) -> None:
        image = mnt / name / "latest" / name
        for _ in range(PASSES):
            try:
                got = _read_through(image)
            except OSError as exc:
                failures.append(f"{name}: {exc}")
                return
            if got != expected[name]:
                failures.append(f"{name}: other bytes")
                return

    mnt = tmp_path / "mnt"
    with mounted(repo, mnt):
        threads = [threading.Thread(target=reader, args=(name, mnt), daemon=True) for name in expected]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 180
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "every reader ends"
    assert failures == [], failures
