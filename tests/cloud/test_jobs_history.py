"""`stackvault jobs --server`: the history of one server's backups, and a refused one's reason."""

from __future__ import annotations

import uuid

import pytest

from .test_server_backup import _boot

pytestmark = pytest.mark.devcloud


@pytest.mark.slow
def test_jobs_of_one_server(user, fast_cloud, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    mine = _boot(conn, cloud_objects, f"hist-a-{tag}", "sv-agent")
    other = _boot(conn, cloud_objects, f"hist-b-{tag}", "sv-agent")
    done = user.run("backup", "--server", f"hist-*-{tag}", "--level", "full").data
    assert done["status"] in ("success", "warning"), done
    by_server = {s["name"]: s["backup_id"] for s in done["servers"]}

    jobs = user.run("jobs", "--server", mine.name).data["jobs"]
    assert [(j["kind"], j["backup_id"], j["server"]) for j in jobs] == [
        ("backup", by_server[mine.name], {"name": mine.name, "id": mine.id})]
    assert [j["backup_id"] for j in user.run("jobs", "--server", other.id).data["jobs"]] == [by_server[other.name]]
    shown = user.run("jobs", "show", jobs[0]["job_id"], json_out=False).stdout
    assert f"Server:    {mine.name} ({mine.id})" in shown and "disk vda: full" in shown, shown
