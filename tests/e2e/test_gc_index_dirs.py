"""gc leaves no empty index folders behind: one per pruned, forgotten or killed backup accumulated before."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from .helpers import MIB, Stackvault, make_random_image, sha256_file


def test_gc_removes_the_index_folders_of_pruned_and_killed_backups(repo: Stackvault, rng: random.Random,
                                                                   tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    ids = [repo.backup(src, level="full")["backup_id"] for _ in range(3)]
    # what a backup killed after writing its index, before its record, leaves
    killed = repo.repo / "indexes" / "20261201T000000000Z-0badc0"
    killed.mkdir()
    shutil.copyfile(repo.repo / "indexes" / ids[0] / "0.fidx", killed / "0.fidx")

    repo.run("prune", "--keep-last", "1")
    repo.run("gc")
    folders = sorted(p.name for p in (repo.repo / "indexes").iterdir())
    assert folders == [ids[-1]], f"gc left index folders behind: {folders}"
    assert sha256_file(repo.restore(ids[-1], tmp_path / "out.raw")) == sha256_file(src)
    repo.run("verify", "--deep")
