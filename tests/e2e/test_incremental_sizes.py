"""What each level stores: an incremental stores the changed blocks, a differential the union since the full.

The bounds are computed from the blocks the test itself touched (random data, so every touched block
changes and nothing compresses): a user checks "1% changed, about 1% stored".
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .helpers import BLOCK, KIB, MIB, Stackvault, churn, make_random_image, sha256_file

SIZE = 64 * MIB
BLOCKS = SIZE // BLOCK


def _stored_bounds(blocks: int) -> tuple[int, int]:
    """Random blocks do not compress: about one block each; slack for the manifest and per-chunk headers."""
    return int(blocks * BLOCK * 0.95), int(blocks * BLOCK * 1.05) + 64 * KIB


def _assert_restores(repo: Stackvault, backup_id: str, expected_sha: str, out: Path) -> None:
    repo.restore(backup_id, out)
    assert sha256_file(out) == expected_sha, f"{backup_id} restored different bytes"
    out.unlink()


def test_incremental_after_one_percent_churn_stores_about_one_percent(repo: Stackvault, rng: random.Random,
                                                                      tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    full = repo.backup(src, level="full")
    assert full["blocks_total"] == BLOCKS, full
    assert full["bytes_stored"] >= SIZE * 0.95, f"a full of random data stores it all: {full}"

    touched = churn(src, rng, writes=BLOCKS // 100, max_len=4 * KIB)  # ~1% of the blocks, scattered
    inc = repo.backup(src, level="incremental")
    assert inc["level"] == "incremental", inc
    assert inc["blocks_total"] == BLOCKS, inc
    assert inc["blocks_changed"] == len(touched), f"touched {len(touched)} blocks: {inc}"
    low, high = _stored_bounds(len(touched))
    assert low <= inc["bytes_stored"] <= high, f"{len(touched)} blocks of {BLOCK} changed: {inc}"
    assert inc["disks"][0]["blocks_changed"] == len(touched), inc
    _assert_restores(repo, inc["backup_id"], sha256_file(src), tmp_path / "inc.raw")


def test_incremental_with_no_change_stores_nothing(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 16 * MIB, rng)
    repo.backup(src, level="full")
    churn(src, rng, writes=20)
    repo.backup(src, level="incremental")
    again = repo.backup(src, level="incremental")
    assert again["level"] == "incremental", again
    assert again["blocks_changed"] == 0, again
    assert again["bytes_stored"] == 0, again
    assert again["status"] == "success", again
    _assert_restores(repo, again["backup_id"], sha256_file(src), tmp_path / "same.raw")


@pytest.mark.slow
def test_differential_after_two_incrementals_covers_the_union(repo: Stackvault, rng: random.Random,
                                                              tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 32 * MIB, rng)
    blocks = (32 * MIB) // BLOCK
    repo.backup(src, level="full")
    a = churn(src, rng, writes=blocks // 50)
    inc1 = repo.backup(src, level="incremental")
    assert inc1["blocks_changed"] == len(a), inc1
    b = churn(src, rng, writes=blocks // 50)
    inc2 = repo.backup(src, level="incremental")
    assert inc2["blocks_changed"] == len(b), inc2

    diff = repo.backup(src, level="differential")
    assert diff["level"] == "differential", diff
    assert diff["blocks_changed"] == len(a | b), f"|A|={len(a)} |B|={len(b)} |A∪B|={len(a | b)}: {diff}"
    low, high = _stored_bounds(len(a | b))
    assert low <= diff["bytes_stored"] <= high, f"a differential stores the union A∪B ({len(a | b)} blocks): {diff}"
    _assert_restores(repo, diff["backup_id"], sha256_file(src), tmp_path / "diff.raw")

    c = churn(src, rng, writes=blocks // 100)
    diff2 = repo.backup(src, level="differential")
    assert diff2["blocks_changed"] == len(a | b | c), diff2
    low, high = _stored_bounds(len(a | b | c))
    assert low <= diff2["bytes_stored"] <= high, f"stores everything changed since the full: {diff2}"
    _assert_restores(repo, diff2["backup_id"], sha256_file(src), tmp_path / "diff2.raw")


@pytest.mark.slow
def test_full_resets_what_a_differential_counts(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 16 * MIB, rng)
    repo.backup(src, level="full")
    churn(src, rng, writes=30)
    repo.backup(src, level="incremental")
    full2 = repo.backup(src, level="full")
    assert full2["level"] == "full", full2
    assert full2["bytes_stored"] == 0, f"every chunk is already in the repository: {full2}"
    d = churn(src, rng, writes=7)
    diff = repo.backup(src, level="differential")
    assert diff["blocks_changed"] == len(d), f"only changes since the second full count: {diff}"
    _assert_restores(repo, diff["backup_id"], sha256_file(src), tmp_path / "d.raw")
