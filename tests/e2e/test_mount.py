"""`stackvault mount`: backups as read-only raw images in a FUSE file system.

The mounted image of every backup is byte-identical to `restore --to file:`; `ls` shows every
server and backup and a `latest` link; writes are refused; SIGTERM unmounts cleanly and the command
exits 0; gc waits while the mount holds its read lock.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .helpers import KIB, MIB, Stackvault, make_sparse_image, one_error, sha256_file

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def _mounted(where: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(where) for line in f)


@contextmanager
def mounted(sv: Stackvault, where: Path, *extra: str) -> Iterator[dict]:
    """`mount` running until the block ends, then stopped with SIGTERM; the dict gets its report."""
    where.mkdir(exist_ok=True)
    proc = sv.popen("mount", str(where), *extra)
    deadline = time.monotonic() + 60
    while not _mounted(where):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "mount did not appear within 60 s"
        time.sleep(0.05)
    report: dict = {}
    try:
        yield report
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        assert not _mounted(where), "SIGTERM must unmount"
        report.update(json.loads(out))


def _disk(path: Path, rng: random.Random, data_at: int) -> Path:
    return make_sparse_image(path, 8 * MIB, rng, [(0, 512 * KIB, "random"), (data_at, 700 * KIB, "text")])


def test_mounted_images_equal_restores(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    a = _disk(tmp_path / "a.raw", rng, 3 * MIB)
    first = repo.backup(a, level="full")["backup_id"]
    _disk(a, rng, 5 * MIB)
    second = repo.backup(a)["backup_id"]
    b = _disk(tmp_path / "b.img", rng, 1 * MIB)
    other = repo.backup(b)["backup_id"]
    mnt = tmp_path / "mnt"
    with mounted(repo, mnt) as report:
        assert sorted(os.listdir(mnt)) == ["a.raw", "b.img"]
        assert sorted(os.listdir(mnt / "a.raw")) == sorted([first, second, "latest"])
        assert os.readlink(mnt / "a.raw" / "latest") == second
        for bid, server, name in ((first, "a.raw", "a.raw"), (second, "a.raw", "a.raw"), (other, "b.img", "b.img.raw")):
            restored = repo.restore(bid, tmp_path / f"{bid}.raw")
            assert sha256_file(mnt / server / bid / name) == sha256_file(restored), bid
        assert sha256_file(mnt / "a.raw" / "latest" / "a.raw") == sha256_file(a)
        with pytest.raises(OSError):
            with open(mnt / "a.raw" / second / "a.raw", "r+b") as f:
                f.write(b"x")
        # gc needs the exclusive lock the mount's read lock denies it
        res = repo.run("gc", expect=None, timeout=120)
        one_error(res, "lock")
    assert report["backups"] == 3


def test_mount_of_one_server_and_bad_input(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    bid = repo.backup(_disk(tmp_path / "a.raw", rng, 2 * MIB))["backup_id"]
    repo.backup(_disk(tmp_path / "b.raw", rng, 2 * MIB))
    mnt = tmp_path / "mnt"
    with mounted(repo, mnt, "--server", "a.raw"):
        assert os.listdir(mnt) == ["a.raw"]
    one_error(repo.run("mount", str(mnt), "--server", "nosuch", expect=None, timeout=60), "nosuch", rc=2)
    one_error(repo.run("mount", str(mnt), "nosuchbackup", expect=None, timeout=60), "nosuchbackup", rc=2)
    one_error(repo.run("mount", str(tmp_path / "absent"), bid, expect=None, timeout=60), "not a directory", rc=2)
    assert not _mounted(mnt)
