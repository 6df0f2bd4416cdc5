"""Working state that cannot be written or was lost never costs a traceback nor a Full's worth of bytes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .helpers import BLOCK, MIB, Stackvault, change_blocks, make_random_image, sha256_file
from .test_bad_input import assert_clear_error

SIZE = 8 * MIB


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_backup_goes_on_without_caching_when_the_workdir_cannot_be_written(repo: Stackvault, rng: random.Random,
                                                                          tmp_path: Path, where: str) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    repo.backup(src, level="full")
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file where the working directory should be")
    repo.workdir = blocker if where == "file" else blocker / "work"
    changed = change_blocks(src, rng.sample(range(SIZE // BLOCK), 5), rng)
    inc = repo.backup(src, level="incremental")
    assert inc["level"] == "incremental" and inc["blocks_changed"] == len(changed), inc
    assert inc["status"] == "warning" and any("cannot write working state" in w for w in inc["warnings"]), inc
    out = repo.restore(inc["backup_id"], tmp_path / "out.raw")
    assert sha256_file(out) == sha256_file(src)
    assert_clear_error(repo.run("state", "rebuild", expect=None), "working state", rc=1)
    assert blocker.read_bytes() == b"a file where the working directory should be"


def test_differential_after_the_bitmap_was_lost_stores_only_what_changed_since_the_full(
        repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    full = repo.backup(src, level="full")
    blocks = rng.sample(range(SIZE // BLOCK), 20)
    first = change_blocks(src, blocks[:10], rng)
    repo.backup(src, level="incremental")
    second = change_blocks(src, blocks[10:], rng)
    for bmp in repo.workdir.rglob("*.bmp"):
        bmp.unlink()
    diff = repo.backup(src, level="differential")
    assert diff["level"] == "differential", diff
    assert any("bitmap" in w for w in diff["warnings"]), diff
    assert diff["blocks_changed"] == len(first | second), diff
    stored = diff["disks"][0]["bytes_stored"]
    # incompressible blocks: about one block stored per block changed since the Full, far from a Full
    assert stored <= len(first | second) * (BLOCK + 1024), diff
    assert stored < full["disks"][0]["bytes_stored"] // 4, (diff, full)
    out = repo.restore(diff["backup_id"], tmp_path / "diff.raw")
    assert sha256_file(out) == sha256_file(src)
