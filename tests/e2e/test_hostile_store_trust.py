"""The proxy remembers each repository it used, outside it: a store cannot downgrade an encrypted
repository to plaintext, swap in another repository, or roll back its backups unnoticed."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, one_error, tree_listing
from .test_encryption import PASSPHRASE, EncryptedSv


def plain_user(sv: Stackvault) -> Stackvault:
    """The same proxy (workdir, catalog, repository) run without any passphrase in its environment."""
    return Stackvault(sv.root)


def plant_plain_config(sv: Stackvault) -> None:
    """What a hostile store does: a plain config with the repository's id, the records moved aside."""
    doc = json.loads((sv.repo / "config").read_bytes())
    plain = {k: doc[k] for k in ("id", "created", "block_size", "compression_level", "format")}
    plain.update(version=1, hash="blake3", chunk_codec="zstd")
    (sv.repo / "config").chmod(0o644)
    (sv.repo / "config").write_text(json.dumps(plain))
    shutil.move(sv.repo / "backups", sv.root / "backups-aside")


@pytest.fixture
def encrypted(tmp_path: Path, rng: random.Random) -> tuple[EncryptedSv, Path]:
    esv = EncryptedSv(tmp_path / "sv")
    esv.run("init", "--block-size", "64KiB", "--encrypt")
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    esv.backup(src, level="full")
    return esv, src


def test_plain_config_planted_in_an_encrypted_repository_is_refused(encrypted: tuple[EncryptedSv, Path]) -> None:
    esv, src = encrypted
    plant_plain_config(esv)
    before = tree_listing(esv.repo)
    for user in (esv, plain_user(esv)):  # with the passphrase in the environment, and without
        for args in (["backup", "--source", f"file:{src}", "--level", "full"], ["list"], ["verify"]):
            line = one_error(user.run(*args, expect=None), "plain")
            assert "trust accept" in line, line
    assert tree_listing(esv.repo) == before, "nothing may be written to the downgraded repository"
    assert not list(esv.repo.rglob("backups/*")), "no plaintext backup was written"


def test_passphrase_given_for_a_plain_repository_is_refused(sv: Stackvault, tmp_path: Path,
                                                            rng: random.Random) -> None:
    """A proxy that never used the location (no memory) still refuses: its operator expects encryption."""
    sv.init()
    esv = EncryptedSv(tmp_path / "other")  # another proxy: its own workdir and catalog, same repository
    esv.repo = sv.repo
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    before = tree_listing(sv.repo)
    one_error(esv.run("backup", "--source", f"file:{src}", expect=None), "passphrase", "not encrypted")
    assert tree_listing(sv.repo) == before


def test_require_encryption_refuses_a_plain_repository(sv: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    sv.init()
    config = tmp_path / "stackvault.toml"
    config.write_text("require_encryption = true\n")
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    one_error(sv.run("backup", "--source", f"file:{src}", globals_=["--config", str(config)], expect=None),
              "not encrypted", "require_encryption")
    esv = EncryptedSv(tmp_path / "enc")
    esv.run("init", "--encrypt", globals_=["--config", str(config)])
    esv.backup(src, extra=())  # an encrypted one is fine
    assert esv.run("list", globals_=["--config", str(config)]).data["backups"]


def test_another_repository_at_a_known_location_is_refused_until_accepted(sv: Stackvault, tmp_path: Path,
                                                                          rng: random.Random) -> None:
    sv.init()
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    sv.backup(src)
    other = Stackvault(tmp_path / "elsewhere")
    other.init()
    shutil.rmtree(sv.repo)
    shutil.copytree(other.repo, sv.repo)
    line = one_error(sv.run("backup", "--source", f"file:{src}", expect=None), "id changed")
    assert "trust accept" in line
    accepted = sv.run("trust", "accept").data
    assert accepted["id"] == json.loads((sv.repo / "config").read_bytes())["id"]
    sv.backup(src)


def test_init_by_the_operator_at_a_known_location_is_trusted(sv: Stackvault, tmp_path: Path,
                                                             rng: random.Random) -> None:
    sv.init()
    shutil.rmtree(sv.repo)
    sv.init()
    sv.backup(make_random_image(tmp_path / "disk.img", MIB, rng))


def test_rolled_back_store_is_reported(sv: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    """The store serves an old copy of the repository: list and verify say so (text and JSON)."""
    sv.init()
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    first = sv.backup(src)["backup_id"]
    old_copy = tmp_path / "old-copy"
    shutil.copytree(sv.repo, old_copy)
    newest = sv.backup(src, level="full")["backup_id"]
    sv.run("list")
    shutil.rmtree(sv.repo)
    shutil.copytree(old_copy, sv.repo)

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"  # a catalog that never knew the newest backup
    listed = sv.run("list", catalog=fresh).data
    assert [b["backup_id"] for b in listed["backups"]] == [first]
    assert newest in listed["rollback"] and "older state" in listed["warning"], listed
    verified = sv.run("verify", catalog=fresh).data
    assert any(newest in w for w in verified["warnings"]), verified
    text = sv.run("list", json_out=False, catalog=fresh)
    assert "older state" in text.stdout, text.describe()
    sv.run("trust", "accept")
    assert "rollback" not in sv.run("list", catalog=fresh).data


def test_memory_is_private_to_the_proxy(sv: Stackvault) -> None:
    sv.init()
    files = list((sv.workdir / "known-repositories").iterdir())
    assert len(files) == 1
    assert files[0].stat().st_mode & 0o077 == 0
    assert (sv.workdir / "known-repositories").stat().st_mode & 0o077 == 0
    doc = json.loads(files[0].read_bytes())
    assert doc["location"] == str(sv.repo) and PASSPHRASE not in files[0].read_text()
