"""Bad values and bad config files: one `stackvault: error:` line, exit 2, nothing changed.

A number outside its range must never be read as something else: a negative `--keep-daily` once
meant "keep nothing" and removed every backup with exit 0, a compression level zstd refuses was
accepted by `init` and failed every later backup. A config path that is not a readable UTF-8 TOML
file gets the same one line, and is read within a fixed memory bound (a device given by mistake
is not read whole).
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
from pathlib import Path

import pytest

from .helpers import MIB, Result, Stackvault, make_random_image, sha256_file, tree_listing
from .test_bad_input import assert_clear_error

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_backups(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stackvault, Path, list[str]]:
    root = tmp_path_factory.mktemp("hostile-values")
    sv = Stackvault(root / "sv")
    sv.init("64KiB")
    src = make_random_image(root / "disk.img", MIB, random.Random(9))
    ids = [sv.backup(src, level="full")["backup_id"] for _ in range(2)]
    return sv, src, ids


def _unchanged(sv: Stackvault, ids: list[str], files: dict) -> None:
    assert tree_listing(sv.repo) == files, "the repository's files changed"
    assert sv.list_ids() == ids, "list changed"


@pytest.mark.parametrize("level", ["99", "-100", "-1", "23", "1.5", "fast"])
def test_init_refuses_a_compression_level_zstd_cannot_use(sv: Stackvault, level: str) -> None:
    res = sv.run("init", "--compression-level", level, expect=None)
    assert_clear_error(res, "--compression-level", level)
    assert not (sv.repo / "config").exists(), "a refused init must not leave a repository"


@pytest.mark.parametrize("level", ["1", "19", "22"])
def test_init_takes_every_documented_compression_level(sv: Stackvault, level: str, tmp_path: Path) -> None:
    sv.run("init", "--compression-level", level)
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(3))
    bid = sv.backup(src)["backup_id"]
    assert sha256_file(sv.restore(bid, tmp_path / "out.img")) == sha256_file(src)


@pytest.mark.parametrize("args", [
    ["prune", "--keep-daily", "-1"], ["prune", "--keep-last", "-1"], ["prune", "--keep-weekly", "-3"],
    ["prune", "--keep-monthly", "-1"], ["prune", "--keep-last", "two"],
    ["gc", "--grace", "-1"], ["gc", "--grace", "nan"], ["gc", "--grace", "inf"],
    ["list", "--wait", "-1"], ["list", "--wait", "nan"],
])
def test_negative_or_meaningless_numbers_are_refused(two_backups, args: list[str]) -> None:
    sv, _, ids = two_backups
    files = tree_listing(sv.repo)
    assert_clear_error(sv.run(*args, expect=None), args[-2])
    _unchanged(sv, ids, files)


@pytest.mark.parametrize("body, named", [
    ("[retention]\nkeep_daily = -1\n", "retention.keep_daily"),
    ("[retention]\nkeep_last = true\n", "retention.keep_last"),
    ("[retention]\nkeep_last = 1.5\n", "retention.keep_last"),
    ("compression_level = 99\n", "compression_level"),
    ("compression_level = -100\n", "compression_level"),
    ("workers = 0\n", "workers"),
    ("workers = -4\n", "workers"),
    ("lock_wait = -1\n", "lock_wait"),
    ("lock_wait = nan\n", "lock_wait"),
    ("[cloud]\nparallel = 0\n", "cloud.parallel"),
    ("[cloud]\nretries = -1\n", "cloud.retries"),
    ("[cloud]\ntimeout = -5\n", "cloud.timeout"),
    ("[cloud]\ntimeout = nan\n", "cloud.timeout"),
    ("[cloud]\ntimeout = inf\n", "cloud.timeout"),
    ('repo = ""\n', "repo"),
    ('workdir = ""\n', "workdir"),
    ('catalog = ""\n', "catalog"),
])
def test_bad_values_in_the_config_are_refused(two_backups, tmp_path: Path, body: str, named: str) -> None:
    sv, _, ids = two_backups
    files = tree_listing(sv.repo)
    cfg = tmp_path / "stackvault.toml"
    cfg.write_text(body)
    for args in (["prune"], ["list"]):
        assert_clear_error(sv.run(*args, expect=None, globals_=["--config", str(cfg)]), named)
    _unchanged(sv, ids, files)


def test_a_bad_retention_in_the_config_forgets_nothing(two_backups, tmp_path: Path) -> None:
    """The config's retention gets the check the options get (`--keep-daily -1` once forgot every backup)."""
    sv, _, ids = two_backups
    files = tree_listing(sv.repo)
    cfg = tmp_path / "stackvault.toml"
    cfg.write_text("[retention]\nkeep_daily = -1\nkeep_last = 0\n")
    assert_clear_error(sv.run("prune", expect=None, globals_=["--config", str(cfg)]), "keep_daily")
    _unchanged(sv, ids, files)


@pytest.mark.parametrize("option", ["--repo", "--workdir", "--catalog"])
def test_an_empty_location_is_refused(two_backups, option: str) -> None:
    """An empty --workdir would have been the current directory, an empty --catalog the default one."""
    sv, _, ids = two_backups
    files = tree_listing(sv.repo)
    argv = sv.argv(["list"])
    argv[argv.index(option) + 1] = ""
    proc = subprocess.run(argv, capture_output=True, text=True, env=sv.env(), timeout=120)
    assert_clear_error(Result(argv, proc.returncode, proc.stdout, proc.stderr), option)
    _unchanged(sv, ids, files)


def test_config_path_that_is_a_directory(two_backups, tmp_path: Path) -> None:
    sv, _, _ = two_backups
    assert_clear_error(sv.run("list", expect=None, globals_=["--config", str(tmp_path)]), str(tmp_path), "directory")


def test_config_that_is_not_utf8(two_backups, tmp_path: Path) -> None:
    sv, _, _ = two_backups
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('name_of_the_caf\xe9 = 1\n'.encode("latin-1"))
    assert_clear_error(sv.run("list", expect=None, globals_=["--config", str(cfg)]), str(cfg), "UTF-8")


def test_config_with_a_name_that_is_not_utf8(two_backups, tmp_path: Path) -> None:
    sv, _, _ = two_backups
    cfg = tmp_path / "caf\udce9.toml"  # the byte 0xE9 alone: not UTF-8
    argv = [a.encode("utf-8", "surrogateescape") for a in sv.argv(["list"], globals_=["--config", str(cfg)])]
    proc = subprocess.run(argv, capture_output=True, env=sv.env(), timeout=120)
    res = Result([a.decode(errors="replace") for a in argv], proc.returncode, proc.stdout.decode(errors="replace"),
                 proc.stderr.decode(errors="replace"))
    assert_clear_error(res, "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_config_that_cannot_be_read(two_backups, tmp_path: Path) -> None:
    sv, _, _ = two_backups
    cfg = tmp_path / "locked.toml"
    cfg.write_text('repo = "/x"\n')
    cfg.chmod(0)
    assert_clear_error(sv.run("list", expect=None, globals_=["--config", str(cfg)]), str(cfg))


def test_config_that_is_a_device_is_not_read_whole(two_backups) -> None:
    """`--config /dev/zero`: refused after a bounded read, under a 1 GiB address-space limit, in seconds."""
    sv, _, _ = two_backups
    argv = sv.argv(["list"], globals_=["--config", "/dev/zero"])

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run(argv, capture_output=True, text=True, env=sv.env(), timeout=60, preexec_fn=limit)
    assert_clear_error(Result(argv, proc.returncode, proc.stdout, proc.stderr), "/dev/zero")


@pytest.mark.parametrize("value", ["-1", "0", "nan", "soon"])
def test_a_bad_job_lease_in_the_environment(two_backups, value: str) -> None:
    sv, src, ids = two_backups
    files = tree_listing(sv.repo)
    argv = sv.argv(["backup", "--source", f"file:{src}"])
    env = {**sv.env(), "STACKVAULT_JOB_LEASE_S": value}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert_clear_error(Result(argv, proc.returncode, proc.stdout, proc.stderr), "STACKVAULT_JOB_LEASE_S")
    _unchanged(sv, ids, files)
