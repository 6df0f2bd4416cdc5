"""Backups made one after another keep their order, even within the same second.

Backup ids carry the time; a user runs backups back to back (scripts, several disks, retries) and
expects "newest last" in `list`, `latest` to be the last one made, `prune --keep-last` to keep it, and
the next incremental to compare against it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .helpers import KIB, Stackvault, make_random_image, sha256_file, write_at


@pytest.mark.slow  # many backups within a few seconds
def test_backups_in_the_same_second_keep_their_order(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "tiny.img", 256 * KIB, rng)
    made: list[tuple[str, str]] = []  # (backup id, sha256 of the disk then), in the order made
    for n in range(14):
        write_at(src, 0, f"version {n:04d}".encode())
        made.append((repo.backup(src)["backup_id"], sha256_file(src)))
        if len(made) >= 2 and made[-1][0] < made[-2][0]:
            break  # the newer id sorts before the older one (same second): anything ordering by id fails here
    ids = [bid for bid, _ in made]
    assert repo.list_ids() == ids, f"list must keep the order the backups were made: {ids[-2:]} made in that order"

    out = repo.restore("latest", tmp_path / "latest.raw")
    assert sha256_file(out) == made[-1][1], f"`latest` restored an older backup, not {ids[-1]}"

    repo.run("prune", "--keep-last", "1")
    assert repo.list_ids() == [ids[-1]], "keep-last 1 must keep the backup made last"

    inc = repo.backup(src, level="incremental")
    assert not inc["warnings"] and inc["blocks_changed"] == 0, (
        f"the state of the last backup must be taken as current, not as stale: {inc}")
