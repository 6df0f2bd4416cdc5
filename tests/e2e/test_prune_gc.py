"""prune forgets backups, gc frees their chunks: kept backups still restore, the repository shrinks.

Every backup is a complete synthetic full, so forgetting the full under a chain of incrementals must
not break them; and gc must never delete a chunk something still (or again) needs.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from .helpers import (
    BLOCK,
    KIB,
    MIB,
    Stackvault,
    block_digests,
    change_blocks,
    make_random_image,
    sha256_file,
    tree_bytes,
)

SIZE = 8 * MIB
NBLOCKS = SIZE // BLOCK


def _series(repo: Stackvault, rng: random.Random, src: Path, levels: list[str]) -> list[tuple[str, str, set]]:
    """Back up `src` once per level, rewriting 40% of its blocks between backups; (id, sha256, block digests)."""
    out = []
    for i, level in enumerate(levels):
        if i:
            change_blocks(src, rng.sample(range(NBLOCKS), NBLOCKS * 2 // 5), rng)
        bid = repo.backup(src, level=level)["backup_id"]
        out.append((bid, sha256_file(src), set(block_digests(src))))
    return out


def _chunk_bytes(repo: Stackvault) -> int:
    """Bytes of chunk files (their sizes, not their allocation, which rounds each file up to 4 KiB)."""
    return sum(p.stat().st_size for p in (repo.repo / "chunks").rglob("*") if p.is_file())


def test_prune_keep_last_then_gc_keeps_what_is_kept_and_frees_the_rest(repo: Stackvault, rng: random.Random,
                                                                       tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    first_version = tmp_path / "v0.img"
    shutil.copyfile(src, first_version)
    taken = _series(repo, rng, src, ["full", "incremental", "differential", "incremental", "incremental"])
    ids = [t[0] for t in taken]
    assert repo.list_ids() == ids

    repo.run("prune", "--keep-last", "2", "--dry-run")
    assert repo.list_ids() == ids, "--dry-run must forget nothing"

    size_before = tree_bytes(repo.repo)
    repo.run("prune", "--keep-last", "2")
    assert repo.list_ids() == ids[-2:], "keep-last 2 keeps the two newest"
    repo.run("gc", "--grace", "0")
    size_after = tree_bytes(repo.repo)
    assert size_after < size_before, f"gc freed nothing: {size_before} -> {size_after}"

    kept_chunks = len(taken[-2][2] | taken[-1][2])
    stored = _chunk_bytes(repo)
    assert stored <= kept_chunks * BLOCK * 1.05 + 64 * KIB, (
        f"the kept backups need {kept_chunks} chunks of {BLOCK}, chunks/ holds {stored} bytes")
    assert stored >= kept_chunks * BLOCK * 0.95, f"gc deleted too much: {stored} bytes for {kept_chunks} chunks"

    deep = repo.run("verify", "--deep", expect=None)
    assert deep.rc == 0, deep.describe()
    for bid, sha, _ in taken[-2:]:
        out = repo.restore(bid, tmp_path / f"{bid}.raw")
        assert sha256_file(out) == sha, f"kept backup {bid} restores different bytes after prune + gc"
        out.unlink()

    # the disk goes back to content whose chunks gc just deleted: the next incremental must store them again
    shutil.copyfile(first_version, src)
    inc = repo.backup(src, level="incremental")
    assert inc["level"] == "incremental", inc
    assert inc["bytes_stored"] >= NBLOCKS * 0.5 * BLOCK, f"chunks deleted by gc must be written again: {inc}"
    out = repo.restore(inc["backup_id"], tmp_path / "back.raw")
    assert sha256_file(out) == sha256_file(first_version), "restore after gc of reused content is wrong"
    assert repo.run("verify", "--deep", expect=None).rc == 0


@pytest.mark.slow
def test_differential_survives_its_full_and_incrementals_being_pruned(repo: Stackvault, rng: random.Random,
                                                                      tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    taken = _series(repo, rng, src, ["full", "incremental", "incremental", "differential"])
    repo.run("prune", "--keep-last", "1")
    repo.run("gc", "--grace", "0")
    assert repo.list_ids() == [taken[-1][0]]
    out = repo.restore(taken[-1][0], tmp_path / "diff.raw")
    assert sha256_file(out) == taken[-1][1], "the differential alone must restore the whole disk"
    assert repo.run("verify", "--deep", expect=None).rc == 0


@pytest.mark.slow
def test_prune_is_per_disk(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    a = make_random_image(tmp_path / "a.img", MIB, rng)
    b = make_random_image(tmp_path / "b.img", MIB, rng)
    newest = {}
    for _ in range(2):
        for src in (a, b):
            change_blocks(src, [0, 5], rng)
            newest[src.name] = repo.backup(src)["backup_id"]
    repo.run("prune", "--keep-last", "1")
    assert sorted(repo.list_ids()) == sorted(newest.values()), "keep-last 1 keeps the newest of each disk"


@pytest.mark.slow
def test_prune_keep_daily_keeps_the_newest_of_the_day(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    a = make_random_image(tmp_path / "a.img", MIB, rng)
    ids = []
    for _ in range(2):
        change_blocks(a, [1], rng)
        ids.append(repo.backup(a)["backup_id"])
    repo.run("prune", "--keep-daily", "1")
    assert repo.list_ids() == ids[-1:], "both are from today: keep-daily 1 keeps the newest"


@pytest.mark.slow
def test_gc_during_a_backup_does_not_delete_chunks_the_backup_uses(repo: Stackvault, rng: random.Random,
                                                                   tmp_path: Path) -> None:
    """Chunks orphaned by prune that a running backup dedups against must survive a concurrent gc."""
    size = 64 * MIB
    n = size // BLOCK
    src = make_random_image(tmp_path / "disk.img", size, rng)
    v1 = tmp_path / "v1.img"
    shutil.copyfile(src, v1)
    repo.backup(src, level="full")
    change_blocks(src, range(n), rng)
    repo.backup(src, level="incremental")
    repo.run("prune", "--keep-last", "1")  # v1's chunks are now unreferenced

    shutil.copyfile(v1, src)  # the disk returns to v1: a backup will find those chunks "already stored"
    started = time.monotonic()
    proc = repo.popen("backup", "--source", f"file:{src}", "--level", "incremental")
    time.sleep(0.8)
    gc = repo.run("gc", "--grace", "0", expect=None)
    assert "Traceback" not in gc.stderr, gc.describe()
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"backup running during gc failed ({time.monotonic() - started:.1f}s): {err}"
    deep = repo.run("verify", "--deep", expect=None)
    assert deep.rc == 0, f"gc deleted chunks a concurrent backup committed\n{deep.describe()}"
    bid = repo.list_ids()[-1]
    restored = repo.restore(bid, tmp_path / "out.raw")
    assert sha256_file(restored) == sha256_file(v1)
