"""`stackvault jobs show` of a policy run names what the run did: each server with its backup and
level, then the retention, gc and verify that followed (what an operator reads after a night's run)."""

from __future__ import annotations

import pytest

from .test_policy_service import WEB_POLICY, booted_with_policy

pytestmark = pytest.mark.devcloud


@pytest.mark.slow  # a Full of one server, then its policy job read back
def test_jobs_show_of_a_policy_run_lists_its_servers_and_maintenance(user, conn, cloud_objects):
    name = booted_with_policy(user, conn, cloud_objects, "show", WEB_POLICY)
    run = user.run("run-policy", "web").data
    assert run["status"] == "success", run
    job = [j for j in user.run("jobs", "--kind", "policy").data["jobs"] if j["policy"] == "web"][-1]

    shown = user.run("jobs", "show", job["job_id"][:12], json_out=False).stdout.splitlines()
    assert "  Policy:    web" in shown
    backup = run["servers"][0]["backup_id"]
    assert f"  server {name}: success, backup {backup} (full)" in shown, shown
    assert "  prune: 0 forgotten, 1 kept" in shown, shown
    assert "  verify: success (" in "\n".join(shown) and "share 1/2)" in "\n".join(shown), shown
    items = user.run("jobs", "show", job["job_id"]).data["items"]
    assert [(i["kind"], i["name"], i["status"], i["backup_id"], i["level"]) for i in items] == [
        ("server", name, "success", backup, "full")], items
