"""The store is not trusted: damaged backup records, config, indexes and chunks are found, named,
skipped by what does not need them, removable with a command, and a damaged chunk heals.

Every test damages the repository's files as a store (or bit rot) would, then uses the real CLI.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, one_error, sha256_file

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow


def record(repo: Stackvault, backup_id: str) -> Path:
    return repo.repo / "backups" / f"{backup_id}.json"


def two_backups(repo: Stackvault, rng: random.Random, tmp_path: Path) -> tuple[Path, str, str, str]:
    """A Full then an Incremental of one disk: (disk, id of the Full, its sha256, id of the newest)."""
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    first = repo.backup(src, level="full")["backup_id"]
    first_sha = sha256_file(src)
    with open(src, "r+b") as f:
        f.seek(MIB)
        f.write(rng.randbytes(4096))
    newest = repo.backup(src)["backup_id"]
    return src, first, first_sha, newest


def damage_json(path: Path, how: str) -> None:
    raw = path.read_bytes()
    path.chmod(0o644)
    if how == "flip":
        data = bytearray(raw)
        i = raw.index(b'"bytes_read"') + 2
        data[i] ^= 0x20  # a letter of a field name changes case: still JSON, no longer the record
        path.write_bytes(bytes(data))
        return
    if how == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
        return
    doc = json.loads(raw)
    if how == "missing field":
        del doc["disks"][0]["index"]
    elif how == "disk size":
        doc["disks"][0]["size"] += 65536
    elif how == "block size":
        doc["disks"][0]["block_size"] *= 2
    elif how == "no disks":
        doc["disks"] = []
    else:
        raise ValueError(how)
    path.write_text(json.dumps(doc))


DAMAGE = ["flip", "truncate", "missing field", "disk size", "block size", "no disks"]


@pytest.mark.parametrize("how", DAMAGE)
def test_each_damaged_record_is_named_by_verify_and_refused_by_restore(repo: Stackvault, rng: random.Random,
                                                                       tmp_path: Path, how: str) -> None:
    src, first, _first_sha, newest = two_backups(repo, rng, tmp_path)
    damage_json(record(repo, first), how)

    for args in (["verify"], ["verify", "--deep"]):
        res = repo.run(*args, expect=3)
        assert "Traceback" not in res.stderr, res.describe()
        bad = res.data["bad_records"]
        assert [b["backup"] for b in bad] == [first], f"{how}: verify must name the record\n{res.describe()}"
        assert res.data["backups_checked"] == 1, "the other backup is still checked"
    text = repo.run("verify", json_out=False, expect=3)
    assert first in text.stdout and "forget" in text.stdout, text.describe()

    target = tmp_path / "out.raw"
    line = one_error(repo.run("restore", first, "--to", f"file:{target}", expect=None), first, "damaged", rc=3)
    assert "forget" in line, line
    assert not target.exists()
    repo.restore(newest, tmp_path / "newest.raw")
    assert sha256_file(tmp_path / "newest.raw") == sha256_file(src)


def test_record_copied_over_another_is_caught(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """A record whose id differs from its name (the store copied one backup's record over another's)."""
    _src, first, _sha, newest = two_backups(repo, rng, tmp_path)
    shutil.copyfile(record(repo, newest), record(repo, first))
    res = repo.run("verify", "--deep", expect=3)
    assert [b["backup"] for b in res.data["bad_records"]] == [first], res.describe()
    assert newest in res.data["bad_records"][0]["problem"], res.describe()
    one_error(repo.run("restore", first, "--to", f"file:{tmp_path / 'x.raw'}", expect=None), first, rc=3)


def test_deleted_record_is_reported_missing_never_erased(repo: Stackvault, rng: random.Random,
                                                         tmp_path: Path) -> None:
    _src, first, _sha, newest = two_backups(repo, rng, tmp_path)
    repo.run("list")  # the catalog knows both
    record(repo, first).unlink()

    for _ in range(2):  # listing again does not erase it either
        listed = repo.run("list").data
        rows = {b["backup_id"]: b for b in listed["backups"]}
        assert rows[first]["status"] == "missing", listed
        assert listed["missing"] == [first] and first in listed["warning"], listed
    human = repo.run("list", json_out=False)
    assert "missing" in human.stdout and first in human.stdout, human.describe()

    res = repo.run("verify", expect=3)
    assert res.data["missing_backups"] == [first], res.describe()

    gone = repo.run("forget", first).data
    assert gone["missing_forgotten"] == [first], gone
    assert repo.list_ids() == [newest]
    assert "warning" not in repo.run("list").data
    repo.run("verify")


@pytest.mark.parametrize("how", ["truncate", "missing field"])
def test_damaged_newest_record_blocks_nothing_and_forget_removes_it(repo: Stackvault, rng: random.Random,
                                                                    tmp_path: Path, how: str) -> None:
    src, first, first_sha, newest = two_backups(repo, rng, tmp_path)
    damage_json(record(repo, newest), how)

    after = repo.backup(src)["backup_id"]  # builds on the newest readable backup
    repo.run("state", "rebuild")
    rebuilt = repo.run("catalog", "rebuild").data
    assert [d["backup_id"] for d in rebuilt["damaged"]] == [newest], rebuilt
    listed = repo.run("list").data
    assert [d["backup_id"] for d in listed["damaged"]] == [newest], listed
    pruned = repo.run("prune", "--keep-last", "1", "--dry-run").data
    assert pruned["damaged"] == [newest] and newest not in pruned["removed"], pruned

    chunks_before = sorted(p.name for p in (repo.repo / "chunks").rglob("*"))
    line = one_error(repo.run("gc", expect=None), newest, "forget", rc=1)
    assert sorted(p.name for p in (repo.repo / "chunks").rglob("*")) == chunks_before, "gc deleted chunks"
    assert "damaged" in line

    repo.restore(first, tmp_path / "first.raw")
    assert sha256_file(tmp_path / "first.raw") == first_sha
    repo.restore("latest", tmp_path / "latest.raw")  # the newest is `after`, readable
    assert sha256_file(tmp_path / "latest.raw") == sha256_file(src)

    repo.run("forget", newest)
    assert not record(repo, newest).exists()
    assert not list((repo.repo / "indexes").glob(f"{newest}/*")), "its block indexes are removed too"
    assert repo.list_ids() == [first, after]
    repo.run("gc")
    assert not (repo.repo / "indexes" / newest).exists(), "gc removes the emptied index folder"
    repo.run("verify", "--deep")


def test_damaged_newest_record_gives_restore_latest_one_line(repo: Stackvault, rng: random.Random,
                                                             tmp_path: Path) -> None:
    _src, _first, _sha, newest = two_backups(repo, rng, tmp_path)
    damage_json(record(repo, newest), "truncate")
    one_error(repo.run("restore", "latest", "--to", f"file:{tmp_path / 'x.raw'}", expect=None), newest, rc=3)


@pytest.mark.parametrize("how", ["garbage", "block size", "not an object"])
def test_damaged_config_is_named_by_verify(repo: Stackvault, rng: random.Random, tmp_path: Path, how: str) -> None:
    two_backups(repo, rng, tmp_path)
    config = repo.repo / "config"
    config.chmod(0o644)
    if how == "garbage":
        config.write_bytes(config.read_bytes()[:20])
    elif how == "not an object":
        config.write_text("[1, 2]")
    else:
        doc = json.loads(config.read_bytes())
        doc["block_size"] *= 2
        config.write_text(json.dumps(doc))
    line = one_error(repo.run("verify", expect=None), "config")
    assert "damaged" in line or "not a stackvault repository" in line, line


def test_chunk_with_trailing_bytes_is_damaged(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = tmp_path / "text.img"
    src.write_bytes(b"compressible text block " * (2 * MIB // 24))
    bid = repo.backup(src, level="full")["backup_id"]
    victim = next(p for p in (repo.repo / "chunks").rglob("*") if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes() + b"appended by the store")
    res = repo.run("verify", "--deep", expect=3)
    assert [c["chunk"] for c in res.data["bad_chunks"]] == [victim.name], res.describe()
    assert bid in res.data["bad_chunks"][0]["backups"]


def test_block_index_with_trailing_bytes_is_damaged(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    _src, first, _sha, _newest = two_backups(repo, rng, tmp_path)
    index = repo.repo / "indexes" / first / "0.fidx"
    index.chmod(0o644)
    index.write_bytes(index.read_bytes() + bytes(32))
    res = repo.run("verify", expect=3)
    assert [b["backup"] for b in res.data["bad_indexes"]] == [first], res.describe()
    one_error(repo.run("restore", first, "--to", f"file:{tmp_path / 'x.raw'}", expect=None), "index")


@pytest.mark.parametrize("encrypted", [False, True])
def test_damaged_chunk_heals_with_the_next_full(sv: Stackvault, rng: random.Random, tmp_path: Path,
                                                encrypted: bool) -> None:
    """verify --deep names the bad chunk and sets it aside; the next Full stores it again; the old
    backup then restores byte-identical and verifies."""
    env_sv = _with_passphrase(sv) if encrypted else sv
    env_sv.run("init", "--block-size", "64KiB", *(["--encrypt"] if encrypted else []))
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    first = env_sv.backup(src, level="full")["backup_id"]
    chunks = sorted(p for p in (sv.repo / "chunks").rglob("*") if p.is_file())
    victim = rng.choice(chunks)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))

    res = env_sv.run("verify", "--deep", expect=3)
    assert [c["chunk"] for c in res.data["bad_chunks"]] == [victim.name], res.describe()
    assert res.data["set_aside"] == [victim.name + ".bad"], res.describe()
    assert not victim.exists() and victim.with_name(victim.name + ".bad").exists()

    again = env_sv.backup(src, level="full")
    assert again["bytes_stored"] > 0, f"the next Full must store the damaged chunk again: {again}"
    assert victim.exists()
    out = env_sv.restore(first, tmp_path / "first.raw")
    assert sha256_file(out) == sha256_file(src)
    env_sv.run("verify", "--deep")
    env_sv.run("gc")
    assert not victim.with_name(victim.name + ".bad").exists(), "gc removes the chunk set aside"


def test_restore_meeting_a_damaged_chunk_sets_it_aside(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    first = repo.backup(src, level="full")["backup_id"]
    victim = next(p for p in (repo.repo / "chunks").rglob("*") if p.is_file())
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes()[:100])
    one_error(repo.run("restore", first, "--to", f"file:{tmp_path / 'x.raw'}", expect=None), victim.name, rc=3)
    assert repo.backup(src, level="full")["bytes_stored"] > 0
    assert sha256_file(repo.restore(first, tmp_path / "y.raw")) == sha256_file(src)


def _with_passphrase(sv: Stackvault) -> Stackvault:
    from .test_encryption import EncryptedSv

    return EncryptedSv(sv.root)

