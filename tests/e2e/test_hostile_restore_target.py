"""Restore targets: a device node is never replaced by a file, a link planted at the staging name is
never written through, bad places get the one-line error, and a killed restore's staging file is
removed by the next command of any kind."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, kill_group, make_random_image, make_sparse_image, sha256_file, tree_listing
from .helpers import loop_device as attached
from .test_bad_input import assert_clear_error


@pytest.fixture
def backed_up(repo: Stackvault, rng: random.Random, tmp_path: Path) -> tuple[Stackvault, str, Path]:
    src = make_random_image(tmp_path / "disk.img", 4 * MIB, rng)
    return repo, repo.backup(src, level="full")["backup_id"], src


@pytest.fixture
def loop_device(tmp_path: Path, rng: random.Random) -> Iterator[Path]:
    with attached(make_sparse_image(tmp_path / "backing.img", 4 * MIB, rng, [(0, 1 * MIB, "random")])) as dev:
        yield dev


def test_file_target_with_force_never_replaces_a_device_node(backed_up, loop_device: Path) -> None:
    sv, bid, src = backed_up
    before = sha256_file(loop_device)
    res = sv.run("restore", bid, "--to", f"file:{loop_device}", "--force", expect=None)
    assert_clear_error(res, str(loop_device), "device:")
    assert stat.S_ISBLK(loop_device.stat().st_mode), "the device node was replaced"
    assert sha256_file(loop_device) == before
    # the explicit target: refused without --force, written in place with it
    assert_clear_error(sv.run("restore", bid, "--to", f"device:{loop_device}", expect=None), "--force")
    sv.run("restore", bid, "--to", f"device:{loop_device}", "--force")
    assert stat.S_ISBLK(loop_device.stat().st_mode)
    assert sha256_file(loop_device) == sha256_file(src)


def test_device_target_must_be_a_block_device(backed_up, tmp_path: Path) -> None:
    sv, bid, _src = backed_up
    plain = tmp_path / "plain.raw"
    plain.write_bytes(b"x")
    for target in (plain, tmp_path / "missing"):
        assert_clear_error(sv.run("restore", bid, "--to", f"device:{target}", "--force", expect=None), str(target))
    assert plain.read_bytes() == b"x"


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_link_planted_at_the_staging_name_is_not_written_through(backed_up, tmp_path: Path, fmt: str) -> None:
    sv, bid, _src = backed_up
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / f"out.{fmt}"
    staging = [Path(f"{target}.partial")] + ([Path(f"{target}.partial.raw")] if fmt == "qcow2" else [])
    for p in staging:
        p.symlink_to(victim)
    sv.restore(bid, target, fmt=fmt)
    assert victim.read_bytes() == b"precious", "the restore wrote through a planted link"
    assert not any(os.path.lexists(p) for p in staging)
    assert not target.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_restore_to_a_directory(backed_up, tmp_path: Path) -> None:
    sv, bid, _src = backed_up
    d = tmp_path / "a-directory"
    d.mkdir()
    for force in ([], ["--force"]):
        assert_clear_error(sv.run("restore", bid, "--to", f"file:{d}", *force, expect=None), str(d), "directory")
    assert d.is_dir() and not list(d.iterdir())


@pytest.fixture
def mount_point(tmp_path: Path):
    """A tmpfs of `size` mounted for the test (root only), unmounted whatever happens."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_restore_into_a_read_only_place(backed_up, mount_point) -> None:
    sv, bid, _src = backed_up
    where = mount_point("ro", "8m")
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    target = where / "out.raw"
    assert_clear_error(sv.run("restore", bid, "--to", f"file:{target}", expect=None), str(target), "writ")
    assert not list(where.iterdir())


def test_restore_running_out_of_space(backed_up, mount_point) -> None:
    sv, bid, _src = backed_up
    where = mount_point("small", "1m")  # the disk is 4 MiB of incompressible data
    repo_before = tree_listing(sv.repo)
    target = where / "out.raw"
    res = sv.run("restore", bid, "--to", f"file:{target}", expect=None)
    assert_clear_error(res, "space", str(target), rc=1)
    assert not list(where.iterdir()), "a failed restore left files behind"
    assert tree_listing(sv.repo) == repo_before


def test_a_killed_restores_staging_file_is_removed_by_the_next_command(repo: Stackvault, rng: random.Random,
                                                                        tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "big.img", 64 * MIB, rng)
    bid = repo.backup(src, level="full")["backup_id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "restored.raw"
    partial = Path(f"{target}.partial")
    proc = repo.popen("restore", bid, "--to", f"file:{target}")
    deadline = time.monotonic() + 60

    def writing() -> bool:  # the staging file has its size: the restore is under way
        try:
            return partial.stat().st_size > 0
        except FileNotFoundError:
            return False

    while not writing() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        proc.communicate()
        pytest.skip("restore finished before the kill")
    kill_group(proc)
    assert partial.exists() and not target.exists()
    # a file someone puts at a noted path later is not the staging file: it stays
    res = repo.run("list", json_out=True)
    assert not partial.exists(), f"`list` left the killed restore's {partial}\n{res.describe()}"
    assert str(partial) in res.stderr, res.describe()
    partial.write_bytes(b"someone else's file")
    repo.run("list")
    assert partial.read_bytes() == b"someone else's file"
