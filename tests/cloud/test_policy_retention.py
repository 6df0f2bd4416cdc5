"""A policy's retention forgets only the backups that policy made: never another policy's backups of
the same server (a monthly archive under a daily policy) nor a backup an operator made by hand."""

from __future__ import annotations

import pytest

from .test_policy_service import booted_with_policy

pytestmark = pytest.mark.devcloud


@pytest.mark.slow  # five backups of one server
def test_a_policys_retention_keeps_other_policies_and_manual_backups(user, conn, cloud_objects):
    name = booted_with_policy(user, conn, cloud_objects, "ret", '''
[policy.daily]
schedule = "0 3 * * *"
servers = ["{name}"]
retention = { keep_last = 1 }

[policy.monthly]
schedule = "0 4 1 * *"
servers = ["{name}"]
retention = { keep_last = 1 }
''')

    def policy_backup(policy: str) -> str:
        run = user.run("run-policy", policy).data
        assert run["status"] == "success", run
        return run["servers"][0]["backup_id"]

    monthly = policy_backup("monthly")
    manual = user.run("backup", "--server", name).data["servers"][0]["backup_id"]
    first_daily = policy_backup("daily")
    last_daily = policy_backup("daily")  # its retention runs now: keep the newest daily one

    kept = {b["backup_id"] for b in user.run("list").data["backups"]}
    assert {monthly, manual, last_daily} <= kept, "another policy's and a manual backup are kept"
    assert first_daily not in kept, "the policy's own older backup is forgotten"
