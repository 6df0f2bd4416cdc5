"""Working state (`<disk>.sha`, `<disk>.bmp`) that is missing, corrupt or stale never makes a wrong backup.

The spec: such state is rebuilt from the newest manifest with a warning and the job stays the level
asked for; it never silently falls back to Full and never produces a wrong incremental. A user sees
that as: level still `incremental`, a warning, exactly the blocks they changed, and a correct restore.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, churn, make_random_image, sha256_file

SIZE = 8 * MIB


def _state_file(repo: Stackvault, suffix: str) -> Path:
    found = sorted(repo.workdir.rglob(f"*.{suffix}"))
    assert len(found) == 1, f"expected one .{suffix} file under --workdir {repo.workdir}, found {found}"
    return found[0]


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(how)


def _restores_to(repo: Stackvault, backup_id: str, src: Path, out: Path) -> None:
    repo.restore(backup_id, out)
    assert sha256_file(out) == sha256_file(src), f"{backup_id} restored different bytes"
    out.unlink()


@pytest.mark.parametrize("how", ["delete", "flip", "truncate"])
@pytest.mark.parametrize("suffix", ["sha", "bmp"])
def test_damaged_state_file_keeps_the_next_incremental_incremental_and_correct(
    repo: Stackvault, rng: random.Random, tmp_path: Path, suffix: str, how: str
) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    repo.backup(src, level="full")
    a = churn(src, rng, writes=6)
    repo.backup(src, level="incremental")

    _damage(_state_file(repo, suffix), how)
    c = churn(src, rng, writes=6)
    inc = repo.backup(src, level="incremental")
    assert inc["level"] == "incremental", f"damaged .{suffix} ({how}) must not turn the job into a full: {inc}"
    assert inc["warnings"], f"damaged .{suffix} ({how}) must be reported as a warning: {inc}"
    assert inc["blocks_changed"] == len(c), f"changed {len(c)} blocks since the last backup: {inc}"
    _restores_to(repo, inc["backup_id"], src, tmp_path / "inc.raw")

    # the rebuilt bitmap still knows everything changed since the full
    diff = repo.backup(src, level="differential")
    assert diff["level"] == "differential", diff
    assert diff["blocks_changed"] == len(a | c), f"|A∪C|={len(a | c)}: {diff}"
    # and the state is healthy again: no more warnings
    again = repo.backup(src, level="incremental")
    assert again["blocks_changed"] == 0 and not again["warnings"], again


def test_wiped_workdir_keeps_incremental_incremental(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """A new backup host (empty working directory, same repository and catalog)."""
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    repo.backup(src, level="full")
    for p in list(repo.workdir.rglob("*.sha")) + list(repo.workdir.rglob("*.bmp")):
        p.unlink()
    c = churn(src, rng, writes=9)
    inc = repo.backup(src, level="incremental")
    assert inc["level"] == "incremental" and inc["warnings"], inc
    assert inc["blocks_changed"] == len(c), inc
    _restores_to(repo, inc["backup_id"], src, tmp_path / "inc.raw")


def test_stale_state_from_an_older_backup_is_detected(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """State left from backup 1 while the repository's newest is backup 2 (e.g. restored from an old copy)."""
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    repo.backup(src, level="full")
    old_state = tmp_path / "old-state"
    shutil.copytree(repo.workdir, old_state, ignore=shutil.ignore_patterns("*.db", "*.db-*"))
    churn(src, rng, writes=8)
    repo.backup(src, level="incremental")
    for p in old_state.rglob("*"):
        if p.is_file():
            shutil.copy2(p, repo.workdir / p.relative_to(old_state))

    c = churn(src, rng, writes=5)
    inc = repo.backup(src, level="incremental")
    assert inc["level"] == "incremental", inc
    assert inc["warnings"], f"stale state (older backup id) must be reported: {inc}"
    assert inc["blocks_changed"] == len(c), f"compared against the newest backup, {len(c)} blocks changed: {inc}"
    _restores_to(repo, inc["backup_id"], src, tmp_path / "inc.raw")


@pytest.mark.parametrize("requested", ["incremental", "differential", None])
def test_first_backup_of_a_disk_is_upgraded_to_full_and_says_so(repo: Stackvault, rng: random.Random,
                                                                tmp_path: Path, requested: str | None) -> None:
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    report = repo.backup(src, level=requested)
    assert report["level"] == "full", report
    assert report["requested_level"] == (requested or "incremental"), report
    disk = report["disks"][0]
    assert disk["level"] == "full", report
    said = (json.dumps(report.get("warnings", [])) + " " + str(disk.get("reason", ""))).lower()
    assert "full" in said, f"the report must say why the job became a full: {report}"
    _restores_to(repo, report["backup_id"], src, tmp_path / "r.raw")


def test_state_rebuild_command_restores_working_state(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    repo.backup(src, level="full")
    a = churn(src, rng, writes=4)
    repo.backup(src, level="incremental")
    shutil.rmtree(repo.workdir)
    repo.workdir.mkdir()
    repo.run("state", "rebuild")
    assert list(repo.workdir.rglob("*.sha")), "state rebuild wrote no .sha file"
    c = churn(src, rng, writes=4)
    inc = repo.backup(src, level="incremental")
    assert inc["level"] == "incremental" and not inc["warnings"], f"state was rebuilt, no warning expected: {inc}"
    assert inc["blocks_changed"] == len(c), inc
    diff = repo.backup(src, level="differential")
    assert diff["blocks_changed"] == len(a | c), diff
