"""A damaged chunk is found by `verify --deep`, named with the backups it affects, and never restored as data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from .helpers import MIB, Result, Stackvault, make_random_image, sha256_file


def _chunk_files(repo: Stackvault) -> set[Path]:
    root = repo.repo / "chunks"
    assert root.is_dir(), f"no chunks/ directory in the repository {repo.repo}"
    return {p for p in root.rglob("*") if p.is_file()}


def _names_chunk(reported: str, path: Path) -> bool:
    """The reported chunk id is the file's name (maybe without an extension) or is in its path."""
    stem = path.name.split(".")[0]
    return bool(reported) and (reported in str(path) or stem in reported)


def _two_disjoint_backups(repo: Stackvault, rng: random.Random, tmp_path: Path):
    """Backup A (disk a) and backup B (disk b) of unrelated random data, so they share no chunk."""
    a = make_random_image(tmp_path / "a.img", 4 * MIB, rng)
    b = make_random_image(tmp_path / "b.img", 4 * MIB, rng)
    id_a = repo.backup(a, level="full")["backup_id"]
    chunks_a = _chunk_files(repo)
    id_b = repo.backup(b, level="full")["backup_id"]
    assert len(chunks_a) >= 64, f"4 MiB of 64 KiB blocks should be 64 chunks, found {len(chunks_a)}"
    return a, b, id_a, id_b, sorted(chunks_a)


def _assert_failed_restore_leaves_nothing(res: Result, target: Path) -> None:
    assert res.rc != 0, f"restore of a backup with a bad chunk must fail\n{res.describe()}"
    assert "Traceback" not in res.stderr, res.describe()
    assert len(res.error_lines()) == 1, f"one clear `stackvault: error:` line expected\n{res.describe()}"
    assert not target.exists(), "a failed restore left the target file"
    assert not Path(str(target) + ".partial").exists(), "a failed restore left the .partial file"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_chunk_is_named_by_deep_verify_and_blocks_restore(repo: Stackvault, rng: random.Random,
                                                                  tmp_path: Path, damage: str) -> None:
    _a, b, id_a, id_b, chunks_a = _two_disjoint_backups(repo, rng, tmp_path)
    victim = rng.choice(chunks_a)
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))

    shallow = repo.run("verify", expect=None)
    deep = repo.run("verify", "--deep", expect=None)
    assert deep.rc == 3, f"verify --deep must exit 3 on a bad chunk\n{deep.describe()}"
    bad = deep.data["bad_chunks"] if deep.data else []
    assert deep.data and deep.data["ok"] is False, deep.describe()
    assert len(bad) == 1, f"exactly one chunk is bad ({victim})\n{deep.describe()}"
    assert _names_chunk(bad[0]["chunk"], victim), f"reported {bad[0]['chunk']}, damaged {victim}"
    assert bad[0]["backups"] == [id_a], f"only backup {id_a} uses that chunk: {bad[0]}"
    assert deep.data["chunks_checked"] >= 128, deep.data
    if damage == "flip":
        assert shallow.rc == 0, f"a present chunk passes the shallow check\n{shallow.describe()}"

    # the same, in the words a person reads
    text = repo.run("verify", "--deep", json_out=False, expect=3)
    said = text.stdout + text.stderr
    assert id_a in said and victim.name.split(".")[0] in said, f"human output names chunk and backup\n{said}"

    target = tmp_path / "restored-a.raw"
    res = repo.run("restore", id_a, "--to", f"file:{target}", expect=None)
    _assert_failed_restore_leaves_nothing(res, target)
    line = res.error_lines()[0].lower()
    assert "chunk" in line or "corrupt" in line or "damaged" in line, f"the error must say what is wrong: {line}"

    ok = repo.restore(id_b, tmp_path / "restored-b.raw")
    assert sha256_file(ok) == sha256_file(b), "an unaffected backup must still restore"


def test_missing_chunk_is_found_by_plain_verify(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    _a, _b, id_a, id_b, chunks_a = _two_disjoint_backups(repo, rng, tmp_path)
    victim = rng.choice(chunks_a)
    victim.unlink()
    res = repo.run("verify", expect=None)
    assert res.rc == 3, res.describe()
    assert res.data["ok"] is False and len(res.data["bad_chunks"]) == 1, res.describe()
    assert _names_chunk(res.data["bad_chunks"][0]["chunk"], victim), res.describe()
    assert res.data["bad_chunks"][0]["backups"] == [id_a], res.describe()
    # verifying only the unaffected backup passes
    only_b = repo.run("verify", id_b, expect=None)
    assert only_b.rc == 0, only_b.describe()

    target = tmp_path / "restored-a.raw"
    _assert_failed_restore_leaves_nothing(repo.run("restore", id_a, "--to", f"file:{target}", expect=None), target)


def test_restore_failure_keeps_existing_target_with_force(repo: Stackvault, rng: random.Random,
                                                         tmp_path: Path) -> None:
    """`--force` over an existing file, then a bad chunk: the old file must survive untouched."""
    _a, _b, id_a, _id_b, chunks_a = _two_disjoint_backups(repo, rng, tmp_path)
    victim = chunks_a[len(chunks_a) // 2]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x80
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    target = tmp_path / "precious.raw"
    target.write_bytes(b"keep me")
    res = repo.run("restore", id_a, "--to", f"file:{target}", "--force", expect=None)
    assert res.rc != 0, res.describe()
    assert target.read_bytes() == b"keep me", "a failed restore must not replace the existing file"
    assert not Path(str(target) + ".partial").exists(), "a failed restore left the .partial file"
