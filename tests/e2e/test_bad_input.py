"""Bad input: one clear `stackvault: error: <what> (<fix>)` line, a non-zero exit, and nothing lost.

"Nothing lost" is checked the way a user would: the repository's files are byte-for-byte what they
were, `list` shows the same backups, `verify` passes and the earlier backup still restores.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import MIB, Result, Stackvault, make_random_image, sha256_file, tree_listing


@dataclass
class Before:
    """What a user had before the bad commands: a repository with one backup, and what it looked like."""

    sv: Stackvault
    backup_id: str
    source: Path
    source_sha: str
    listing: list
    files: dict


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Before:
    """One repository shared by the tests that must not change it (each checks that it did not)."""
    root = tmp_path_factory.mktemp("bad-input")
    sv = Stackvault(root / "sv")
    sv.init("64KiB")
    src = make_random_image(root / "disk.img", 2 * MIB, random.Random(2))
    bid = sv.backup(src, level="full")["backup_id"]
    return Before(sv, bid, src, sha256_file(src), sv.run("list").data["backups"], tree_listing(sv.repo))


def assert_clear_error(res: Result, *words: str, rc: int | None = 2) -> str:
    """Exit code per the contract, no traceback, exactly one error line naming the problem and a fix."""
    if rc is None:
        assert res.rc != 0, f"must exit non-zero\n{res.describe()}"
    else:
        assert res.rc == rc, f"must exit {rc}\n{res.describe()}"
    assert "Traceback" not in res.stderr, f"a user must not see a traceback\n{res.describe()}"
    lines = res.error_lines()
    assert len(lines) == 1, f"exactly one `stackvault: error:` line expected\n{res.describe()}"
    line = lines[0]
    for word in words:
        assert word.lower() in line.lower(), f"the error must name {word!r}: {line}"
    assert "(" in line and line.rstrip().endswith(")"), f"the contract's `(<fix>)` is missing: {line}"
    return line


def assert_nothing_lost(before: Before) -> None:
    """The repository's files are byte-for-byte the same and list shows the same backups."""
    assert tree_listing(before.sv.repo) == before.files, "the repository's files changed"
    assert before.sv.run("list").data["backups"] == before.listing, "list changed"


def test_missing_source(populated: Before, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-disk.img"
    res = populated.sv.run("backup", "--source", f"file:{missing}", expect=None)
    assert_clear_error(res, str(missing))
    assert_nothing_lost(populated)


def test_directory_as_source(populated: Before, tmp_path: Path) -> None:
    d = tmp_path / "a-directory"
    d.mkdir()
    res = populated.sv.run("backup", "--source", f"file:{d}", expect=None)
    assert_clear_error(res, str(d))
    assert_nothing_lost(populated)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_source(populated: Before, tmp_path: Path) -> None:
    src = tmp_path / "locked.img"
    src.write_bytes(b"x" * 65536)
    src.chmod(0)
    res = populated.sv.run("backup", "--source", f"file:{src}", expect=None)
    assert_clear_error(res, str(src))
    assert_nothing_lost(populated)


def test_second_good_source_is_not_half_backed_up_when_one_is_missing(populated: Before,
                                                                      tmp_path: Path) -> None:
    """A backup of two disks where one is missing fails as a whole before writing anything."""
    gone = tmp_path / "gone.img"
    res = populated.sv.run("backup", "--source", f"file:{populated.source}", "--source", f"file:{gone}",
                   expect=None)
    assert res.rc != 0, res.describe()
    assert populated.sv.run("list").data["backups"] == populated.listing


@pytest.mark.parametrize("command", ["show", "restore", "verify"])
def test_unknown_backup_id(populated: Before, tmp_path: Path, command: str) -> None:
    args = [command, "nosuchbackup123"]
    target = tmp_path / "out.raw"
    if command == "restore":
        args += ["--to", f"file:{target}"]
    assert_clear_error(populated.sv.run(*args, expect=None), "nosuchbackup123")
    assert not target.exists()
    assert_nothing_lost(populated)


def test_repository_of_a_newer_format(populated: Before, tmp_path: Path) -> None:
    config = populated.sv.repo / "config"
    original = config.read_bytes()
    doc = json.loads(original)
    assert isinstance(doc.get("version"), int), f"<repo>/config has no integer \"version\": {doc}"
    try:
        doc["version"] += 1
        config.write_text(json.dumps(doc))
        tampered = tree_listing(populated.sv.repo)

        for args in (["list"], ["backup", "--source", f"file:{populated.source}"], ["verify"],
                     ["restore", populated.backup_id, "--to", f"file:{tmp_path / 'x.raw'}"]):
            res = populated.sv.run(*args, expect=None)
            line = assert_clear_error(res, rc=None)
            said = line.lower()
            assert "version" in said or "format" in said, f"{args}: must say the format is newer: {line}"
            assert str(doc["version"]) in line, f"{args}: name the version found: {line}"
        assert tree_listing(populated.sv.repo) == tampered, "nothing may be written to a newer-format repository"
        assert not (tmp_path / "x.raw").exists()
    finally:
        config.write_bytes(original)
    assert_nothing_lost(populated)


@pytest.mark.parametrize("toml_text, named", [
    ('blok_size = "1MiB"\n', "blok_size"),
    ('no_such_setting = true\n', "no_such_setting"),
    ('repo = [unclosed\n', "stackvault.toml"),
    ('[ceph]\nvolume_backends = "ceph"\n', "ceph.volume_backends"),
])
def test_wrong_config_file(populated: Before, tmp_path: Path, toml_text: str, named: str) -> None:
    cfg = tmp_path / "stackvault.toml"
    cfg.write_text(toml_text)
    res = populated.sv.run("list", expect=None, globals_=["--config", str(cfg)])
    assert_clear_error(res, named)
    res = populated.sv.run("backup", "--source", f"file:{populated.source}", expect=None,
                           globals_=["--config", str(cfg)])
    assert_clear_error(res, named)
    assert_nothing_lost(populated)


def test_bad_ceph_volume_backend_option_and_cleanup_volume_without_bases(populated: Before) -> None:
    """Refused before any cloud is asked: the option's value, and a --volume that would do nothing."""
    res = populated.sv.run("backup", "--volume", "data1", "--ceph-volume-backend", "=volumes", expect=None)
    assert "--ceph-volume-backend must name Cinder backends and their pools" in assert_clear_error(res)
    res = populated.sv.run("cleanup", "--volume", "data1", expect=None)
    assert "add --bases" in assert_clear_error(res)
    assert_nothing_lost(populated)


def test_missing_config_file(populated: Before, tmp_path: Path) -> None:
    cfg = tmp_path / "nope.toml"
    assert_clear_error(populated.sv.run("list", expect=None, globals_=["--config", str(cfg)]), str(cfg))


def test_restore_onto_existing_file_needs_force(populated: Before, tmp_path: Path) -> None:
    target = tmp_path / "existing.raw"
    target.write_bytes(b"do not overwrite me")
    res = populated.sv.run("restore", populated.backup_id, "--to", f"file:{target}", expect=None)
    assert_clear_error(res, str(target), "--force")
    assert target.read_bytes() == b"do not overwrite me"
    populated.sv.restore(populated.backup_id, target, extra=["--force"])
    assert sha256_file(target) == populated.source_sha


@pytest.mark.parametrize("size", ["3KiB", "32KiB", "32MiB", "1MB2", "96KiB"])
def test_init_rejects_bad_block_size(sv: Stackvault, size: str) -> None:
    assert_clear_error(sv.run("init", "--block-size", size, expect=None), size)
    assert not (sv.repo / "config").exists(), "a rejected init must not leave a repository"


def test_init_over_an_existing_repository_is_refused(populated: Before, tmp_path: Path) -> None:
    res = populated.sv.run("init", "--block-size", "1MiB", expect=None)
    assert_clear_error(res, str(populated.sv.repo), rc=None)
    assert_nothing_lost(populated)


def test_backup_without_a_repository_says_to_init(sv: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, rng)
    res = sv.run("backup", "--source", f"file:{src}", expect=None)
    assert_clear_error(res, "init", rc=None)


def test_unknown_level_is_usage_error(populated: Before) -> None:
    res = populated.sv.run("backup", "--source", f"file:{populated.source}", "--level", "weekly", expect=None)
    assert res.rc == 2 and "Traceback" not in res.stderr, res.describe()


def test_after_the_bad_commands_the_backup_still_verifies_and_restores(populated: Before, tmp_path: Path) -> None:
    """Run last in this module: the shared repository survived every bad command above."""
    assert_nothing_lost(populated)
    populated.sv.run("verify", "--deep")
    out = populated.sv.restore(populated.backup_id, tmp_path / "check.raw")
    assert sha256_file(out) == populated.source_sha


# --- full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path):
    """An 8 MiB tmpfs to hold the repository; skipped where mounting is not allowed."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_fails_cleanly_and_loses_nothing(tmp_path: Path, small_fs: Path, rng: random.Random) -> None:
    sv = Stackvault(tmp_path / "sv")
    sv.repo = small_fs / "repo"
    sv.init("64KiB")
    small = make_random_image(tmp_path / "small.img", 2 * MIB, rng)
    bid = sv.backup(small, level="full")["backup_id"]
    listing = sv.run("list").data["backups"]
    state = {p: p.read_bytes() for p in sv.workdir.rglob("*") if p.is_file() and p.suffix in (".sha", ".bmp")}

    big = make_random_image(tmp_path / "big.img", 32 * MIB, rng)
    res = sv.run("backup", "--source", f"file:{big}", "--level", "full", expect=None)
    line = assert_clear_error(res, rc=None)
    assert "space" in line.lower() or "full" in line.lower(), f"must say the disk is full: {line}"
    assert str(small_fs) in line or "repo" in line.lower(), f"must say where: {line}"

    assert sv.run("list").data["backups"] == listing, "the failed backup must not be listed"
    assert {p: p.read_bytes() for p in state} == state, "working state of the good disk changed"
    verify = sv.run("verify", "--deep", expect=None)
    assert verify.rc == 0, verify.describe()
    out = tmp_path / "small.out"
    sv.restore(bid, out)
    assert sha256_file(out) == sha256_file(small)

    # once space is back, the next backup of the same disk works
    small_change = make_random_image(tmp_path / "small.img", 2 * MIB, rng)
    sv.run("gc", "--grace", "0")
    again = sv.backup(small_change, level="incremental")
    out.unlink()
    sv.restore(again["backup_id"], out)
    assert sha256_file(out) == sha256_file(small_change)
