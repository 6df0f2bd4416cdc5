"""Policies against the dev cloud: `run-policy` once, and `stackvault server` on a seconds cadence.

The server takes a scheduled Full then Incrementals, its retention prunes and gc frees, SIGHUP reads a
changed config, SIGTERM stops it with nothing left in the cloud, and every run is a `policy` job row
in the catalog with its items.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from stackvault.catalog import Catalog
from stackvault.catalog.models import JobRow, PolicyRunRow

from .test_server_backup import _boot

pytestmark = pytest.mark.devcloud


def _policy_jobs(user) -> list[JobRow]:
    catalog = Catalog(user.catalog_url)
    try:
        with catalog.session() as s:
            return list(s.scalars(select(JobRow).where(JobRow.kind == "policy").order_by(JobRow.started)))
    finally:
        catalog.close()


def _runs(user) -> list[PolicyRunRow]:
    catalog = Catalog(user.catalog_url)
    try:
        with catalog.session() as s:
            return list(s.scalars(select(PolicyRunRow).order_by(PolicyRunRow.created)))
    finally:
        catalog.close()


#: A daily policy of one server keeping its newest backup, deep-verifying half the chunks per run.
WEB_POLICY = '''
[policy.web]
schedule = "0 3 * * *"
servers = ["{name}"]
retention = { keep_last = 1 }
verify_sample_percent = 50
'''


def booted_with_policy(user, conn, cloud_objects, prefix: str, policies: str) -> str:
    """A new server (no agent) named `prefix-<random>`, and `policies` (TOML; `{name}` is the server's
    name) added to the user's config; returns the name."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    user.config.write_text(user.config.read_text() + policies.replace("{name}", name))
    return name


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow  # half a minute: two runs of a server, with prune, gc and verify
def test_run_policy_backs_up_its_selection_prunes_collects_and_verifies(user, conn, cloud_objects):
    name = booted_with_policy(user, conn, cloud_objects, "pol", WEB_POLICY)
    first = user.run("run-policy", "web").data
    assert first["status"] == "success", first
    assert first["level"] == "full" and [s["name"] for s in first["servers"]] == [name]
    assert first["servers"][0]["level"] == "full"
    assert first["prune"]["removed"] == [] and "gc" not in first  # nothing forgotten: no gc
    assert first["verify"]["ok"] and first["verify"]["sample"] == "1/2"

    second = user.run("run-policy", "web").data
    assert second["status"] == "success", second
    assert second["level"] == "incremental" and second["servers"][0]["level"] == "incremental"
    assert second["prune"]["removed"] == [first["servers"][0]["backup_id"]]
    assert second["gc"]["chunks_deleted"] >= 0 and second["verify"]["sample"] == "2/2"
    assert [b["backup_id"] for b in user.run("list").data["backups"]] == [second["servers"][0]["backup_id"]]

    jobs = _policy_jobs(user)
    assert [j.status for j in jobs] == ["success", "success"]
    assert jobs[1].report["servers"][0]["backup_id"] == second["servers"][0]["backup_id"]

    human = user.run("run-policy", "web", json_out=False)
    assert human.stdout.startswith("Policy web: success (incremental, run for ")
    unknown = user.run("run-policy", "nope", json_out=False, expect=2)
    assert unknown.error_lines() == ["stackvault: error: no policy 'nope' in the config (the config has: "
                                     "proxy-state, web)"]


@pytest.mark.slow
def test_the_server_runs_due_policies_reloads_on_sighup_and_stops_cleanly_on_sigterm(user, conn, cloud_objects):
    name = f"srv-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    base = user.config.read_text()
    user.config.write_text(base + f'''
[policy.web]
schedule = "* * * * * */10"
servers = ["{name}"]
retention = {{ keep_last = 2 }}

[policy.proxy-state]
schedule = "* * * * * */10"
''')
    server = subprocess.Popen(user.argv(["server"], json_out=False), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=user.env(), start_new_session=True)
    try:
        done = _wait_for(lambda: [r for r in _runs(user) if r.policy == "web" and r.status == "done"][3:],
                         240, "four finished runs of policy web")
        levels = [r.level for r in _runs(user) if r.policy == "web" and r.status == "done"]
        assert levels[:4] == ["full", "incremental", "incremental", "incremental"], levels
        assert all(r.report["status"] == "success" for r in done), [r.report for r in done]
        assert any(r.report["prune"]["removed"] for r in done)  # keep_last = 2 forgot the Full's successors
        assert any("gc" in r.report for r in done)
        backups = [b for b in user.run("list").data["backups"] if b["name"] == name]
        assert 1 <= len(backups) <= 3, backups  # two kept, maybe a third committed since the last prune
        assert any(r.policy.startswith("proxy-state@") and r.status == "done" for r in _runs(user))
        assert list((user.repo / "proxy-state").iterdir())

        # SIGHUP: the policy goes, the server stays and runs it no more.
        user.config.write_text(base + f'''
[policy.web]
enabled = false
schedule = "* * * * * */10"
servers = ["{name}"]
''')
        server.send_signal(signal.SIGHUP)
        time.sleep(3)  # a run queued just before the reload may still finish
        settled = len([r for r in _runs(user) if r.policy == "web"])
        time.sleep(25)  # two and a half slots
        assert len([r for r in _runs(user) if r.policy == "web"]) == settled
        assert server.poll() is None, "SIGHUP stopped the server"
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=300)
    assert server.returncode == 0, err
    assert "config reloaded" in err and "stopping:" in err, err
    assert "Traceback" not in err
    assert all(r.status == "done" for r in _runs(user))
    leftovers = user.run("cleanup", "--dry-run").data
    assert not (leftovers["images"] or leftovers["snapshots"] or leftovers["volumes"]), leftovers


@pytest.mark.slow
def test_a_restarted_server_catches_up_the_slots_it_missed_once(user, conn, cloud_objects):
    name = f"cat-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    user.config.write_text(user.config.read_text() + f'''
[policy.web]
schedule = "* * * * * */20"
servers = ["{name}"]
''')

    def serve() -> subprocess.Popen[str]:
        return subprocess.Popen(user.argv(["server"], json_out=False), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=user.env(), start_new_session=True)

    def web_runs() -> list[PolicyRunRow]:
        return [r for r in _runs(user) if r.policy == "web"]

    server = serve()
    try:
        _wait_for(lambda: [r for r in web_runs() if r.status == "done"], 120, "a first run")
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=300)
    assert server.returncode == 0
    stopped = datetime.now().astimezone()
    before = len(web_runs())
    time.sleep(45)  # two slots or more pass with no server
    while datetime.now().second % 20 != 1:  # restart just after a slot: the next one is 19 s away
        time.sleep(0.2)
    restarted = datetime.now().astimezone()
    server = serve()
    try:
        caught_up = _wait_for(lambda: web_runs()[before:], 60, "the catch-up run")[0]
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=300)
    slot = datetime.fromisoformat(caught_up.slot)
    # At once, for the newest missed slot (not the first one, nor the next slot to come): one run for all.
    assert stopped + timedelta(seconds=20) < slot <= restarted, (stopped, slot, restarted)
