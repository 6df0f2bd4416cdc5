"""A damaged or unreachable catalog never stops a restore: the repository alone holds the truth.

The SQLite catalog is filled with garbage, truncated, has pages overwritten, or lies under a regular
file. Then restore, verify, list and show still work from the repository (list says it listed the
repository's records, and why); a backup stops with one line naming the catalog file and the fix,
`stackvault catalog rebuild`, and writes nothing to the repository; `catalog rebuild` sets the
damaged file aside (kept, for its job history) and builds a new one, after which backups work again.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, change_blocks, make_random_image, sha256_file, tree_listing
from .test_bad_input import assert_clear_error

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow


def _checkpoint(db: Path) -> None:
    """Fold the WAL into the database file, so that damaging the file damages the catalog."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _garbage(db: Path) -> None:
    db.write_bytes(random.Random(1).randbytes(64 * 1024))


def _truncated(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 2)


def _pages(db: Path) -> None:
    """Overwrite every page but the first (the header stays valid: opening the file still works)."""
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(random.Random(2).randbytes(db.stat().st_size - 4096))


DAMAGE = {"garbage": _garbage, "truncated": _truncated, "pages": _pages}


@pytest.fixture
def two_backups(repo: Stackvault, tmp_path: Path, rng: random.Random) -> tuple[Stackvault, list[tuple[str, str]]]:
    """Two backups of one disk and the hash of the disk each was taken from."""
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    taken = [(repo.backup(src, level="full")["backup_id"], sha256_file(src))]
    change_blocks(src, [3, 7], rng)
    taken.append((repo.backup(src)["backup_id"], sha256_file(src)))
    assert repo.list_ids() == [b for b, _ in taken]
    _checkpoint(repo.catalog_file)
    return repo, taken


def _reads_still_work(sv: Stackvault, taken: list[tuple[str, str]], tmp_path: Path, named: str) -> None:
    for backup_id, digest in taken:
        out = tmp_path / f"{backup_id}.raw"
        res = sv.run("restore", backup_id, "--to", f"file:{out}", expect=0)
        assert sha256_file(out) == digest, f"backup {backup_id} restored other bytes"
        assert "Traceback" not in res.stderr and not res.error_lines(), res.describe()
    latest = tmp_path / "latest.raw"
    sv.run("restore", "latest", "--to", f"file:{latest}")
    assert sha256_file(latest) == taken[-1][1]
    assert sv.run("verify", expect=0).data["ok"]
    assert sv.run("show", "latest", expect=0).data["backup_id"] == taken[-1][0]
    listing = sv.run("list", expect=0)
    assert [b["backup_id"] for b in listing.data["backups"]] == [b for b, _ in taken], listing.describe()
    if "warning" in listing.data:
        assert named in listing.data["warning"] and "catalog rebuild" in listing.data["warning"], listing.data
    human = sv.run("list", json_out=False, expect=0)
    assert all(b in human.stdout for b, _ in taken), human.describe()


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_catalog_stops_no_restore(two_backups, tmp_path: Path, rng: random.Random, kind: str) -> None:
    sv, taken = two_backups
    DAMAGE[kind](sv.catalog_file)
    damaged = sv.catalog_file.read_bytes()
    repo_before = tree_listing(sv.repo)

    _reads_still_work(sv, taken, tmp_path, str(sv.catalog_file))
    if kind == "garbage":  # nothing of it can be read: list must say where its answer came from
        warning = sv.run("list").data["warning"]
        assert "listed from the repository" in warning and "damaged" in warning, warning

    res = sv.run("backup", "--source", f"file:{tmp_path / 'disk.img'}", expect=None)
    assert_clear_error(res, str(sv.catalog_file), "damaged", "stackvault catalog rebuild")
    assert tree_listing(sv.repo) == repo_before, "a backup refused for its catalog wrote to the repository"

    rebuilt = sv.run("catalog", "rebuild").data
    kept = Path(rebuilt["damaged_kept_as"])
    assert kept.parent == sv.catalog_file.parent and kept.name.startswith("catalog.db.damaged-"), rebuilt
    assert kept.read_bytes() == damaged, "the damaged catalog must be kept as it was"
    assert rebuilt["backups"] == 2
    assert "stackvault recover" in rebuilt["warning"], "the policies written through the API are not in backups"
    listing = sv.run("list").data
    assert "warning" not in listing and [b["backup_id"] for b in listing["backups"]] == [b for b, _ in taken]
    assert sv.backup(tmp_path / "disk.img")["level"] == "incremental"
    assert tree_listing(sv.repo) != repo_before


def test_rebuild_twice_keeps_both_damaged_files(two_backups) -> None:
    sv, _ = two_backups
    kept = []
    for seed in (1, 2):
        sv.catalog_file.write_bytes(random.Random(seed).randbytes(8192))
        kept.append(sv.run("catalog", "rebuild").data["damaged_kept_as"])
    assert kept[0] != kept[1] and all(Path(k).exists() for k in kept), kept


def test_an_intact_catalog_is_rebuilt_in_place(two_backups) -> None:
    sv, _ = two_backups
    rebuilt = sv.run("catalog", "rebuild").data
    assert "damaged_kept_as" not in rebuilt and rebuilt["backups"] == 2
    assert not list(sv.catalog_file.parent.glob("catalog.db.damaged-*"))


def test_a_catalog_under_a_regular_file(two_backups, tmp_path: Path) -> None:
    sv, taken = two_backups
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the catalog's folder should be\n")
    url = f"sqlite:///{blocker}/catalog.db"
    repo_before = tree_listing(sv.repo)
    for backup_id, digest in taken:
        out = tmp_path / f"{backup_id}.under-file.raw"
        sv.run("restore", backup_id, "--to", f"file:{out}", catalog=url)
        assert sha256_file(out) == digest
    listing = sv.run("list", catalog=url).data
    assert [b["backup_id"] for b in listing["backups"]] == [b for b, _ in taken]
    assert str(blocker) in listing["warning"], listing
    sv.run("verify", catalog=url)
    res = sv.run("backup", "--source", f"file:{tmp_path / 'disk.img'}", expect=None, catalog=url)
    assert_clear_error(res, str(blocker), "not a directory")
    assert_clear_error(sv.run("catalog", "rebuild", expect=None, catalog=url), str(blocker))
    assert tree_listing(sv.repo) == repo_before
    assert blocker.read_text() == "a file where the catalog's folder should be\n"
