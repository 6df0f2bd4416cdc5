"""Restore and verify that run without a lock (the repository cannot take one) say so once, in their
result: the warning is in `--json`'s `warnings` with status `warning`, and printed once in text.

Verify once left it out of its result, and restore printed it twice (stderr and its report).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, sha256_file, tree_listing

SAID = "no lock taken"


@pytest.fixture
def unlockable(repo: Stackvault, tmp_path: Path) -> tuple[Stackvault, str, Path]:
    """A backup in a repository where no lock can be written: a file stands where `locks/` belongs."""
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(6))
    bid = repo.backup(src)["backup_id"]
    shutil.rmtree(repo.repo / "locks", ignore_errors=True)
    (repo.repo / "locks").write_bytes(b"")
    return repo, bid, src


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_the_lock_warning_is_in_the_result_and_printed_once(unlockable, tmp_path: Path, command: str) -> None:
    sv, bid, src = unlockable
    before = tree_listing(sv.repo)
    out = tmp_path / "out.raw"
    args = ["restore", bid, "--to", f"file:{out}", "--force"] if command == "restore" else ["verify"]

    res = sv.run(*args)
    assert res.rc == 0, res.describe()
    assert res.data["status"] == "warning", res.describe()
    assert [w for w in res.data["warnings"] if SAID in w and command in w], res.describe()
    assert SAID not in res.stderr, f"--json output holds the warning; stderr repeats it\n{res.describe()}"

    text = sv.run(*args, json_out=False)
    assert text.rc == 0, text.describe()
    assert (text.stdout + text.stderr).count(SAID) == 1, text.describe()
    if command == "restore":
        assert sha256_file(out) == sha256_file(src)
    assert tree_listing(sv.repo) == before
