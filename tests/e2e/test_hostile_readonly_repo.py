"""Restores and verifies work from a repository that cannot be written: a full file system, a read-only
mount. They go on without a lock, saying so; jobs that write fail with the one line and change nothing."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, sha256_file, tree_listing
from .test_bad_input import assert_clear_error
from .test_hostile_restore_target import mount_point  # noqa: F401 - the tmpfs fixture


def _fill(where: Path) -> None:
    """Write until the file system has no byte left."""
    with open(where / "filler", "wb") as f:
        chunk = b"\xaa" * (64 << 10)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    for size in (4096, 512, 1):  # the last partial pages
        try:
            with open(where / "filler", "ab") as f:
                while True:
                    f.write(b"\xaa" * size)
                    f.flush()
        except OSError:
            pass


def _reads_work_and_writes_fail(sv: Stackvault, bid: str, src: Path, tmp_path: Path, why: str) -> None:
    before = tree_listing(sv.repo)
    for args in (("verify",), ("verify", "--deep")):
        res = sv.run(*args, expect=None)
        assert res.rc == 0 and res.data["ok"], res.describe()
        assert [w for w in res.data["warnings"] if "no lock taken" in w and why in w], res.describe()
    out = tmp_path / "restored.raw"
    res = sv.run("restore", bid, "--to", f"file:{out}")
    assert sha256_file(out) == sha256_file(src)
    assert res.data["status"] == "warning" and "no lock taken" in res.data["warnings"][0], res.describe()
    human = sv.run("restore", bid, "--to", f"file:{out}", "--force", json_out=False)
    assert "warning: no lock taken" in human.stdout, human.describe()

    assert_clear_error(sv.run("backup", "--source", f"file:{src}", expect=None), str(sv.repo), why, rc=1)
    assert_clear_error(sv.run("prune", "--keep-last", "1", expect=None), str(sv.repo), why, rc=1)
    assert_clear_error(sv.run("gc", expect=None), str(sv.repo), why, rc=1)
    assert tree_listing(sv.repo) == before, "a failed job changed the repository"


@pytest.mark.slow
def test_restore_and_verify_from_a_full_repository(tmp_path: Path, rng: random.Random,
                                                   mount_point) -> None:  # noqa: F811 - the imported fixture
    disk = mount_point("full", "16m")
    sv = Stackvault(tmp_path / "sv")
    sv.repo = disk / "repo"
    sv.init("64KiB")
    src = make_random_image(tmp_path / "disk.img", 4 * MIB, rng)
    bid = sv.backup(src, level="full")["backup_id"]
    _fill(disk)
    _reads_work_and_writes_fail(sv, bid, src, tmp_path, "full")


@pytest.mark.slow
def test_restore_and_verify_from_a_read_only_mount(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 4 * MIB, rng)
    bid = repo.backup(src, level="full")["backup_id"]
    where = str(repo.repo)
    if subprocess.run(["mount", "--bind", where, where], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount (needs root)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", where], check=True, capture_output=True)
        _reads_work_and_writes_fail(repo, bid, src, tmp_path, "read-only")
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True)
