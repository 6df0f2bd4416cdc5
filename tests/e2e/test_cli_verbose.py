"""`-v` says what the job does, one line per disk and step, on stderr; `--json` stays one document."""

from __future__ import annotations

import random
from pathlib import Path

from .helpers import MIB, Stackvault, make_random_image


def test_verbose_backup_names_each_disk_and_the_commit(repo: Stackvault, tmp_path: Path) -> None:
    a = make_random_image(tmp_path / "a.img", MIB, random.Random(1))
    b = make_random_image(tmp_path / "b.img", MIB, random.Random(2))
    res = repo.run("backup", "--source", f"file:{a}", "--source", f"file:{b}", globals_=["-v"])
    bid = res.data["backup_id"]
    lines = res.stderr.splitlines()
    assert any(f"backup {bid}: disk a.img" in line for line in lines), res.describe()
    assert any(f"backup {bid}: disk b.img" in line for line in lines), res.describe()
    assert any(f"backup {bid} committed: success" in line for line in lines), res.describe()
    quiet = repo.run("backup", "--source", f"file:{a}")
    assert "disk a.img" not in quiet.stderr, "without -v nothing is logged"
