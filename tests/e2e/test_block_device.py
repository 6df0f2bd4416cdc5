"""A block device (here a loop device, as /dev/vdb would be on a backup proxy) backs up and restores."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import BLOCK, MIB, Stackvault, make_sparse_image, sha256_file, write_at
from .helpers import loop_device as attached


@pytest.fixture
def loop_device(tmp_path: Path, rng: random.Random) -> Iterator[Path]:
    with attached(make_sparse_image(tmp_path / "backing.img", 16 * MIB, rng,
                                [(0, 3 * MIB, "random"), (9 * MIB, 1 * MIB, "text")])) as dev:
        yield dev


def test_block_device_backs_up_incrementally_and_restores(repo: Stackvault, rng: random.Random, tmp_path: Path,
                                                          loop_device: Path) -> None:
    full = repo.backup(loop_device, level="full")
    assert full["disks"][0]["size"] == 16 * MIB, full
    before = sha256_file(loop_device)

    touched = set()
    for block in rng.sample(range(16 * MIB // BLOCK), 12):
        write_at(loop_device, block * BLOCK + 100, rng.randbytes(1000))
        touched.add(block)
    fd = os.open(loop_device, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    inc = repo.backup(loop_device, level="incremental")
    assert inc["level"] == "incremental" and inc["blocks_changed"] == len(touched), inc
    after = sha256_file(loop_device)

    out_full = repo.restore(full["backup_id"], tmp_path / "full.raw")
    assert sha256_file(out_full) == before
    out_inc = repo.restore(inc["backup_id"], tmp_path / "inc.raw")
    assert sha256_file(out_inc) == after


def test_restore_onto_a_block_device_overwrites_old_data_in_the_holes(repo: Stackvault, rng: random.Random,
                                                                      tmp_path: Path, loop_device: Path) -> None:
    """Restoring a sparse backup onto a used volume: where the backup has holes the device must read zeros."""
    src = make_sparse_image(tmp_path / "sparse.img", 16 * MIB, rng, [(2 * MIB, 1 * MIB, "random")])
    bid = repo.backup(src, level="full")["backup_id"]
    assert sha256_file(loop_device) != sha256_file(src), "the device starts with other data"
    refused = repo.run("restore", bid, "--to", f"device:{loop_device}", expect=None)
    assert refused.rc != 0, "a device holding data is an existing target: --force is needed"
    repo.run("restore", bid, "--to", f"device:{loop_device}", "--force")
    assert sha256_file(loop_device) == sha256_file(src), "old device data left where the backup has zeros"
