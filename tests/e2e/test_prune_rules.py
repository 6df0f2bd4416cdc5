"""`prune --keep-hourly/--keep-yearly/--keep-within`: the rules `[retention]` and policies have, on the command line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, change_blocks, make_random_image, one_error


def _three_backups(repo: Stackvault, tmp_path: Path) -> list[str]:
    rng = random.Random(11)
    src = make_random_image(tmp_path / "a.img", MIB, rng)
    ids = []
    for _ in range(3):
        change_blocks(src, [1], rng)
        ids.append(repo.backup(src)["backup_id"])
    return ids


def _newest_per(repo: Stackvault, period: slice) -> list[str]:
    """The newest backup of each period (`created[period]`: the hour or the year), oldest first: what
    keep-hourly/keep-yearly N >= their count keep, even when the backups straddle a period's end."""
    newest: dict[str, str] = {}
    for b in repo.run("list").data["backups"]:  # oldest first
        newest[b["created"][period]] = b["backup_id"]
    return list(newest.values())


@pytest.mark.slow
def test_keep_within_keeps_every_recent_backup_and_adds_to_the_other_rules(repo: Stackvault, tmp_path: Path) -> None:
    ids = _three_backups(repo, tmp_path)
    repo.run("prune", "--keep-last", "1", "--keep-within", "1h", "--dry-run")
    repo.run("prune", "--keep-last", "1", "--keep-within", "1h")
    assert sorted(repo.list_ids()) == sorted(ids), "all three were made within the hour of the newest"
    hours = _newest_per(repo, slice(0, 13))  # 2026-12-07T16
    repo.run("prune", "--keep-hourly", "2")
    assert repo.list_ids() == hours, "keep-hourly keeps the newest backup of each hour"


def test_keep_yearly_keeps_the_newest_of_the_year(repo: Stackvault, tmp_path: Path) -> None:
    ids = _three_backups(repo, tmp_path)
    years = _newest_per(repo, slice(0, 4))
    repo.run("prune", "--keep-yearly", "2")
    assert repo.list_ids() == years and years[-1] == ids[-1]


def test_a_bad_keep_within_is_one_line_and_forgets_nothing(repo: Stackvault, tmp_path: Path) -> None:
    ids = _three_backups(repo, tmp_path)
    one_error(repo.run("prune", "--keep-within", "soon", expect=None), "--keep-within", rc=2)
    assert sorted(repo.list_ids()) == sorted(ids)
