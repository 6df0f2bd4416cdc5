"""`stackvault` on s3:// and swift:// repositories, through the CLI, against a real Swift.

What a user checks: init, backup and restore give back the image byte for byte; a store that
fails now and then costs retries, not a backup; a store that keeps failing fails the backup with
one clear line, and leaves the repository as it was (verify passes, the last good backup restores).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e.helpers import KIB, MIB, Stackvault, change_blocks, make_sparse_image, sha256_file, stackvault_command

from stackvault.storage import open_backend

from .conftest import unique_name

#: Whole backups and restores through local S3 and Swift servers: minutes in all, the slow tier
#: (tests/storage/test_conformance.py checks the backends themselves in the default one).
pytestmark = pytest.mark.slow

FAULTY_CLI = Path(__file__).with_name("faulty_cli.py")


@dataclass
class ObjectStoreUser(Stackvault):
    """A user whose --repo is an object store URL; `faults` runs the CLI over a faulty store."""

    location: str = ""
    faults: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.repo = self.location  # type: ignore[assignment]  # a URL, not a directory

    def env(self) -> dict[str, str]:
        env = {**super().env(), **self.extra_env}
        env.pop("SV_TEST_FAULTS", None)
        if self.faults:
            env["SV_TEST_FAULTS"] = self.faults
        return env

    def argv(self, args: Sequence[str], json_out: bool = True, globals_: Sequence[str] = (),
             catalog: str | None = None) -> list[str]:
        argv = super().argv(args, json_out, globals_, catalog)
        if not self.faults:
            return argv
        return [sys.executable, str(FAULTY_CLI), *argv[len(stackvault_command()):]]


@pytest.fixture(params=["s3", "swift"])
def user(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoreUser:
    """A user with a fresh repository of 64 KiB blocks in a new bucket (S3) or container (Swift)."""
    request.getfixturevalue("s3_env" if request.param == "s3" else "tempauth_env")
    location = f"{request.param}://{unique_name('cli')}/backups/proxy-1"
    open_backend(location).create()  # until `init` creates it (Backend.create)
    u = ObjectStoreUser(tmp_path / "sv", location=location)
    u.init("64KiB")
    return u


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = random.Random(7)
    return make_sparse_image(tmp_path / "disk.raw", 2 * MIB, rng, [
        (0, 256 * KIB, "random"), (1 * MIB + 3 * KIB, 200 * KIB, "text"), (1536 * KIB, 256 * KIB, "random")])


def test_backup_and_restore_byte_for_byte(user: ObjectStoreUser, image: Path, tmp_path: Path) -> None:
    full = user.backup(image, level="full")
    original = sha256_file(image)
    change_blocks(image, [2, 17, 25, 31], random.Random(3))
    incr = user.backup(image, level="incremental")
    assert incr["disks"][0]["blocks_changed"] == 4, incr

    assert sha256_file(user.restore(full["backup_id"], tmp_path / "full.raw")) == original
    assert sha256_file(user.restore("latest", tmp_path / "incr.raw")) == sha256_file(image)
    assert user.run("verify", "--deep").data["ok"]
    # The repository is in the bucket under the prefix, in the documented layout.
    keys = {o.key for o in open_backend(user.location).list("")}
    assert "config" in keys and f"backups/{full['backup_id']}.json" in keys
    assert any(k.startswith("chunks/") for k in keys) and any(k.startswith("indexes/") for k in keys)

    # Forgetting the Full and collecting its chunks keeps what the Incremental needs.
    user.run("prune", "--keep-last", "1")
    user.run("gc")
    assert len(list(open_backend(user.location).list("chunks/"))) < sum(k.startswith("chunks/") for k in keys)
    assert sha256_file(user.restore("latest", tmp_path / "after-gc.raw")) == sha256_file(image)
    assert user.run("verify", "--deep").data["ok"]


def test_transient_faults_are_retried(user: ObjectStoreUser, image: Path, tmp_path: Path) -> None:
    user.faults = "put:transient:prefix=chunks/:nth=2:count=3;get:transient:count=1;exists:transient:nth=5"
    report = user.backup(image, level="full")
    assert report["status"] == "success"
    user.faults = "get:transient:prefix=chunks/:nth=3:count=2"
    assert sha256_file(user.restore("latest", tmp_path / "out.raw")) == sha256_file(image)


@pytest.mark.parametrize(("user", "stage"), [
    ("s3", "chunks/"),
    # The same through the Swift API, and failing after the chunks (at the index, at the record):
    # each takes as long (the retries back off for seconds), so they are in the slow tier.
    pytest.param("swift", "chunks/", marks=pytest.mark.slow),
    pytest.param("s3", "indexes/", marks=pytest.mark.slow),
    pytest.param("s3", "backups/", marks=pytest.mark.slow),
], indirect=["user"])
def test_a_store_that_keeps_failing_leaves_no_broken_backup(
        user: ObjectStoreUser, image: Path, tmp_path: Path, stage: str) -> None:
    user.backup(image, level="full")
    good = sha256_file(image)
    change_blocks(image, [1, 3, 17, 24, 26], random.Random(11))

    user.faults = f"put:transient:prefix={stage}:count=*"
    failed = user.run("backup", "--source", f"file:{image}", "--level", "incremental", expect=1)
    errors = failed.error_lines()
    assert len(errors) == 1 and "gave up after 6 attempts" in errors[0], failed.describe()

    user.faults = ""
    assert len(user.repository_ids()) == 1
    assert user.run("verify").data["ok"]
    assert sha256_file(user.restore("latest", tmp_path / "back.raw")) == good
    # The next backup finds its way: it stores the chunks the failed one could not.
    assert user.backup(image, level="incremental")["disks"][0]["blocks_changed"] == 5
