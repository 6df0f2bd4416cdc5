"""The catalog is a cache of the repository: delete it and `catalog rebuild` brings back the same list."""

from __future__ import annotations

import random
from pathlib import Path

from .helpers import MIB, Stackvault, churn, make_random_image, sha256_file


def test_deleted_catalog_is_rebuilt_from_the_repository(repo: Stackvault, rng: random.Random,
                                                        tmp_path: Path) -> None:
    a = make_random_image(tmp_path / "a.img", 4 * MIB, rng)
    b = make_random_image(tmp_path / "b.img", 2 * MIB, rng)
    repo.backup(a, level="full")
    churn(a, rng, writes=5)
    repo.backup(a, level="incremental")
    repo.backup(b, extra=["--name", "nightly", "--tag", "env=test"])
    churn(a, rng, writes=5)
    churn(b, rng, writes=5)
    repo.backup(a, b, level="differential")
    before = repo.run("list").data["backups"]
    assert len(before) == 4, before

    only_b = repo.run("list", "--source", f"file:{b}").data["backups"]
    assert [x["backup_id"] for x in only_b] == [x["backup_id"] for x in before[2:]], "list --source filters"

    assert repo.catalog_file.exists(), f"--catalog {repo.catalog_url} was not created"
    for p in repo.catalog_file.parent.glob(repo.catalog_file.name + "*"):
        if p.is_file():  # the database and its WAL files; the folder of lock files is no catalog data
            p.unlink()
    repo.run("catalog", "rebuild")
    after = repo.run("list").data["backups"]
    assert after == before, f"list differs after catalog rebuild\nbefore: {before}\nafter:  {after}"

    # and it is usable: show and restore by what the rebuilt catalog lists
    last = after[-1]["backup_id"]
    assert repo.run("show", last).data is not None
    out = repo.restore(last, tmp_path / "a.out", extra=["--disk", "a.img"])
    assert sha256_file(out) == sha256_file(a)

    # rebuilding over an existing catalog changes nothing (no duplicates)
    repo.run("catalog", "rebuild")
    assert repo.run("list").data["backups"] == before, "rebuilding over an existing catalog must not duplicate"


def test_show_reads_the_repository_when_the_catalog_is_unreachable(repo: Stackvault, rng: random.Random,
                                                                   tmp_path: Path) -> None:
    image = make_random_image(tmp_path / "a.img", 2 * MIB, rng)
    backup_id = repo.backup(image, level="full")["backup_id"]
    unreachable = ["--catalog", "postgresql+psycopg://stackvault:x@127.0.0.1:9/none"]  # nothing listens there
    shown = repo.run(*unreachable, "show", backup_id).data
    assert shown["backup_id"] == backup_id and "interrupted_jobs" not in shown
    listed = repo.run(*unreachable, "list").data  # from the repository's records, saying why
    assert [b["backup_id"] for b in listed["backups"]] == [backup_id]
    assert "cannot open catalog" in listed["warning"] and ":x@" not in listed["warning"], listed
