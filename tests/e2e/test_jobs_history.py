"""`stackvault jobs`: the history the catalog records, filtered, and one job with its items, error and fix."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, one_error


def _columns_line_up(text: str) -> None:
    """Every cell starts where its column's name starts (left-aligned) or ends where it ends (numbers):
    no value pushes the columns after it out of line. Cells are separated by two spaces or more."""
    header, *rows = text.splitlines()[:-1]  # the last line counts the rows
    names = list(re.finditer(r"\S+(?: \S+)*", header))
    for row in rows:
        cells = list(re.finditer(r"\S+(?: \S+)*", row))
        assert len(cells) in (len(names), len(names) - 1), f"cells run together:\n{text}"  # last may be empty
        for cell, name in zip(cells, names, strict=False):
            assert cell.start() == name.start() or cell.end() == name.end(), \
                f"{cell.group()!r} is out of line with {name.group()}:\n{text}"


@pytest.mark.slow
def test_jobs_lists_filters_and_shows_a_failure_with_its_fix(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(3))
    first = repo.backup(src)["backup_id"]
    second = repo.backup(src, level="full")["backup_id"]
    repo.run("restore", "no-such-backup", "--to", f"file:{tmp_path / 'out.raw'}", expect=2)
    repo.run("prune", "--keep-last", "1")

    jobs = repo.run("jobs").data["jobs"]
    assert [(j["kind"], j["status"]) for j in jobs] == [
        ("backup", "success"), ("backup", "success"), ("restore", "failed"), ("prune", "success")]
    assert [j["backup_id"] for j in jobs[:2]] == [first, second]

    [failed] = repo.run("jobs", "--status", "failed").data["jobs"]
    assert failed["kind"] == "restore"
    assert [j["backup_id"] for j in repo.run("jobs", "--kind", "backup", "--last", "1").data["jobs"]] == [second]
    assert repo.run("jobs", "--policy", "nightly").data["jobs"] == []

    shown = repo.run("jobs", "show", failed["job_id"][:8]).data
    assert shown["error"] == f"no backup 'no-such-backup' in {repo.repo}"
    assert shown["fix"] == "list backups with `stackvault list`"
    backup_job = repo.run("jobs", "show", jobs[1]["job_id"]).data
    assert [(i["disk"], i["level"]) for i in backup_job["items"]] == [("d.img", "full")]
    prune_job = repo.run("jobs", "show", jobs[3]["job_id"]).data
    assert {(i["backup_id"], i["action"]) for i in prune_job["items"]} == {(first, "removed"), (second, "kept")}

    text = repo.run("jobs", "show", failed["job_id"], json_out=False).stdout
    assert "Error:     no backup 'no-such-backup'" in text and "Fix:       list backups" in text, text
    table = repo.run("jobs", json_out=False).stdout
    assert table.endswith("4 jobs\n"), table
    _columns_line_up(table)


def test_jobs_refuses_a_bad_filter_and_an_unknown_job_in_one_line(repo: Stackvault) -> None:
    one_error(repo.run("jobs", "--status", "exploded", expect=None), "--status", rc=2)
    one_error(repo.run("jobs", "--last", "0", expect=None), "--last", rc=2)
    one_error(repo.run("jobs", "show", "ffff", expect=None), "no job 'ffff'", rc=2)


def test_list_columns_line_up_with_long_ids_and_names(repo: Stackvault, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(4))
    repo.backup(src, extra=["--name", "a name longer than sixteen"])
    repo.backup(src)
    _columns_line_up(repo.run("list", json_out=False).stdout)
