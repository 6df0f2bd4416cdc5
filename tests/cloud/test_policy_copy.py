"""A policy with `copy_to` copies its backups to a second repository after each run: the first run
its backup, the next only the new one; the second site then restores the same bytes on its own, and
`verify --deep` passes there. What the second site forgot stays forgotten."""

from __future__ import annotations

import pytest
from e2e.helpers import sha256_file

from .test_policy_service import booted_with_policy

pytestmark = pytest.mark.devcloud


@pytest.mark.slow  # two policy runs of a server, and a restore from each site
def test_a_policy_copies_its_backups_to_a_second_site_after_each_run(user, conn, cloud_objects, tmp_path):
    second = tmp_path / "second-site"
    at_second = ["--repo", str(second)]
    user.run("init", "--block-size", "64KiB", globals_=at_second)
    booted_with_policy(user, conn, cloud_objects, "cp", f'''
[policy.offsite]
schedule = "0 3 * * *"
servers = ["{{name}}"]
copy_to = "{second}"
''')
    first = user.run("run-policy", "offsite").data
    assert first["status"] == "success", first
    assert first["copy"]["backups_copied"] == 1 and first["copy"]["chunks_sent"] > 0, first["copy"]
    old = first["servers"][0]["backup_id"]

    user.run("forget", old, globals_=at_second)  # the second site keeps less than the first
    again = user.run("run-policy", "offsite").data
    assert again["status"] == "success", again
    new = again["servers"][0]["backup_id"]
    assert again["copy"]["backups_copied"] == 1 and again["copy"]["backups_skipped"] == 1, again["copy"]
    listed = {b["backup_id"] for b in user.run("list", globals_=at_second).data["backups"]}
    assert listed == {new}, "only the new backup is sent; the one the second site forgot is not"

    here = user.restore(new, tmp_path / "first.img")
    user.run("restore", new, "--to", f"file:{tmp_path / 'second.img'}", globals_=at_second)
    assert sha256_file(tmp_path / "second.img") == sha256_file(here)
    assert user.run("verify", "--deep", globals_=at_second).data["ok"]
