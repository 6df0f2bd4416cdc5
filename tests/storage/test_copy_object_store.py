"""`stackvault copy` from a local repository to an s3:// or swift:// one, against a real Swift: the
copy in the object store restores the same bytes once the local repository is gone."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from e2e.helpers import MIB, Stackvault, change_blocks, make_random_image, sha256_file

from stackvault.storage import open_backend

from .conftest import unique_name

#: Whole backups, copies and restores through a local Swift: the slow tier, as test_cli_object_store.
pytestmark = pytest.mark.slow

PASSPHRASE = "the second site's passphrase"


@pytest.mark.parametrize("scheme", ["s3", "swift"])
def test_copy_to_an_object_store_restores_alone(scheme: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    request.getfixturevalue("s3_env" if scheme == "s3" else "tempauth_env")
    sv = Stackvault(tmp_path / "sv")
    sv.init("64KiB")
    location = f"{scheme}://{unique_name('copy')}/second-site"
    open_backend(location).create()
    secret = tmp_path / "second.pass"
    secret.write_text(PASSPHRASE)
    secret.chmod(0o600)
    to_second = ["--repo", location, "--passphrase-file", str(secret)]
    sv.run("init", "--block-size", "64KiB", "--format", "4", "--encrypt", globals_=to_second)

    rng = random.Random(11)
    disk = make_random_image(tmp_path / "disk.img", 3 * MIB, rng)
    taken = {sv.backup(disk, level="full")["backup_id"]: sha256_file(disk)}
    change_blocks(disk, [3, 8, 21], rng)
    taken[sv.backup(disk, level="incremental")["backup_id"]] = sha256_file(disk)

    copy = ["copy", "--to", location, "--to-passphrase-file", secret]
    copied = sv.run(*copy).data
    assert copied["backups_copied"] == 2 and copied["chunks_sent"] > 0, copied
    assert sv.run(*copy).data["chunks_sent"] == 0

    shutil.rmtree(sv.repo)
    for backup_id, digest in taken.items():
        out = tmp_path / f"{backup_id}.img"
        sv.run("restore", backup_id, "--to", f"file:{out}", globals_=to_second)
        assert sha256_file(out) == digest, f"backup {backup_id} restored from {location} differs"
    assert sv.run("verify", "--deep", globals_=to_second).data["ok"]
