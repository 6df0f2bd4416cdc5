"""Durations as operators write them (`30s`, `10m`, `1h`, `7d`) wherever a time is taken."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, one_error


def test_gc_grace_in_hours_keeps_what_seconds_would_delete(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(1))
    bid = repo.backup(src)["backup_id"]
    repo.run("forget", bid)
    kept = repo.run("gc", "--grace", "1h", "--dry-run").data
    assert kept["chunks_deleted"] == 0, "chunks a minute old were deleted under a grace of one hour"
    gone = repo.run("gc", "--grace", "0s").data
    assert gone["chunks_deleted"] > 0


def test_wait_takes_minutes(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(2))
    assert repo.run("backup", "--source", f"file:{src}", globals_=["--wait", "2m"]).data["status"] == "success"


def test_lock_wait_in_the_config_takes_a_duration(repo: Stackvault, tmp_path: Path) -> None:
    config = tmp_path / "sv.toml"
    config.write_text('lock_wait = "1m30s"\n')
    repo.run("list", globals_=["--config", str(config)])


@pytest.mark.parametrize("value", ["5x", "1h-", "m", "-1m", "nan"])
def test_a_bad_duration_is_one_line_naming_the_option(repo: Stackvault, value: str) -> None:
    res = repo.run("gc", "--dry-run", f"--grace={value}", expect=None)
    one_error(res, "--grace", "duration", rc=2)
