"""Several clouds and projects in one config: `[[jobs]]` entries, each with its clouds.yaml entry and
selection, run by one `stackvault backup --job ...` into one repository."""

from __future__ import annotations

import uuid

import pytest

from .test_server_backup import _boot

pytestmark = pytest.mark.devcloud


@pytest.mark.slow  # servers of two projects backed up in one run
def test_jobs_back_up_servers_of_two_projects_in_one_run(user, devcloud, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    demo = devcloud.connect("devcloud-demo")  # another user, another project
    _boot(conn, cloud_objects, f"adm-{tag}", "sv-noagent")
    _boot(demo, cloud_objects, f"dem-{tag}", "sv-noagent")
    user.config.write_text(user.config.read_text() + f'''
[[jobs]]
name = "admin-project"
os_cloud = "devcloud"
servers = ["adm-{tag}"]

[[jobs]]
name = "demo-project"
os_cloud = "devcloud-demo"
servers = ["dem-*"]
server_metadata = {{}}

[[jobs]]
name = "nowhere"
os_cloud = "devcloud-demo"
servers = ["no-such-server-{tag}"]
''')
    report = user.run("backup", "--job", "*-project", "--level", "full").data
    by_job = {s["job"]: s for s in report["servers"]}
    assert set(by_job) == {"admin-project", "demo-project"}, report
    assert by_job["admin-project"]["name"] == f"adm-{tag}" and by_job["demo-project"]["name"] == f"dem-{tag}"
    assert report["status"] == "success" and all(s["status"] == "success" for s in report["servers"])
    names = {b["name"] for b in user.run("list").data["backups"]}
    assert {f"adm-{tag}", f"dem-{tag}"} <= names

    partly = user.run("backup", "--job", "*", expect=1).data  # one job selects nothing: it fails alone
    assert partly["status"] == "partial", partly
    assert [e["name"] for e in partly["job_errors"]] == ["nowhere"]
    assert "no-such-server" in partly["job_errors"][0]["error"]
    assert {s["job"] for s in partly["servers"] if s["status"] == "success"} == {"admin-project", "demo-project"}
    unknown = user.run("backup", "--job", "typo", json_out=False, expect=2)
    assert "no [[jobs]] in the config match typo" in unknown.error_lines()[0]
