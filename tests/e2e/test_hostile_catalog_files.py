"""The catalog's own files are the proxy user's alone, and a bad lock folder is one clear line.

The SQLite catalog (and the `-wal` / `-shm` files SQLite gives the same permissions) names every
server, volume and backup of every project; its lock files are taken with flock, which needs no
write access, so a lock file other users can open would let any of them lock every backup out.
"""

from __future__ import annotations

import random
import stat
from pathlib import Path

from .helpers import MIB, Stackvault, make_random_image, tree_listing
from .test_bad_input import assert_clear_error


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_catalog_and_lock_files_are_private(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(4))
    repo.backup(src)
    db = repo.catalog_file
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name) and p.is_file()]
    assert {p.name for p in files} >= {db.name}, files
    assert all(_mode(p) & 0o077 == 0 for p in files), {p.name: oct(_mode(p)) for p in files}
    locks = db.parent / (db.name + ".locks")
    assert _mode(locks) == 0o700, oct(_mode(locks))
    assert all(_mode(p) == 0o600 for p in locks.iterdir()), {p.name: oct(_mode(p)) for p in locks.iterdir()}


def test_a_lock_file_left_open_to_others_is_made_private(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(4))
    repo.backup(src)
    locks = repo.catalog_file.parent / (repo.catalog_file.name + ".locks")
    for p in locks.iterdir():
        p.chmod(0o666)
    repo.backup(src)
    assert all(_mode(p) == 0o600 for p in locks.iterdir())


def test_a_file_where_the_lock_folder_should_be(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(4))
    locks = repo.catalog_file.parent / (repo.catalog_file.name + ".locks")
    repo.catalog_file.parent.mkdir(parents=True, exist_ok=True)
    locks.write_text("not a folder\n")
    before = tree_listing(repo.repo)
    res = repo.run("backup", "--source", f"file:{src}", expect=None)
    assert_clear_error(res, str(locks), rc=None)
    assert tree_listing(repo.repo) == before
