"""Two `stackvault server` proxies sharing a PostgreSQL catalog and a repository split each run of a
policy: every selected server is backed up exactly once per run, and when one proxy is SIGKILLed
mid-backup, its server is backed up by the other once the lease ends; `cleanup` then removes what
the killed one left in the cloud."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from catalog.conftest import postgres  # noqa: F401 - the session's PostgreSQL server fixture
from sqlalchemy import select

from stackvault.catalog import Catalog
from stackvault.catalog.leases import LEASE_ENV
from stackvault.catalog.models import PolicyItemRow, PolicyRunRow

from .conftest import CloudUser
from .test_server_backup import _boot

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]


def _web_runs(url: str) -> list[tuple[PolicyRunRow, list[PolicyItemRow]]]:
    catalog = Catalog(url)
    try:
        with catalog.session() as s:
            runs = list(s.scalars(select(PolicyRunRow).where(PolicyRunRow.policy == "web")
                                  .order_by(PolicyRunRow.slot)))
            return [(r, list(s.scalars(select(PolicyItemRow).where(PolicyItemRow.run_id == r.id)))) for r in runs]
    finally:
        catalog.close()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.3)
    return value


def _serve(proxy: CloudUser, url: str, log: Path) -> subprocess.Popen[str]:
    env = {**proxy.env(), LEASE_ENV: "4"}
    with open(log, "w") as err:
        return subprocess.Popen(proxy.argv(["server"], json_out=False, catalog=url), stdout=subprocess.DEVNULL,
                                stderr=err, text=True, env=env, start_new_session=True)


def test_two_proxies_split_each_run_and_take_over_a_killed_ones_server(
        tmp_path: Path, devcloud, conn, cloud_objects, postgres) -> None:  # noqa: F811 - the fixture imported above
    if not devcloud.ctx.fast:
        pytest.skip("needs a fast-mode dev cloud (DEVCLOUD_FAST=1): four servers backed up many times")
    url = postgres.create_database(f"proxies_{os.getpid()}")
    tag = uuid.uuid4().hex[:6]
    for n in range(4):
        _boot(conn, cloud_objects, f"{tag}-{n}", "sv-noagent")
    proxies = []
    for name in ("a", "b"):
        proxy = CloudUser(tmp_path / name)
        proxy.configure(devcloud)
        proxy.config.write_text(proxy.config.read_text() + f'''
[policy.web]
schedule = "* * * * * */20"
servers = ["{tag}-*"]
''')
        proxies.append(proxy)
    proxies[1].repo = proxies[0].repo  # one repository, each proxy its own working state
    proxies[0].run("init", "--block-size", "64KiB", catalog=url)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    servers = [_serve(p, url, log) for p, log in zip(proxies, logs, strict=True)]
    try:
        for log in logs:
            _wait_for(lambda log=log: "serving policies" in log.read_text(), 60, f"{log.name} to serve")
        first, items = _wait_for(lambda: [r for r in _web_runs(url) if r[0].status == "done"], 240,
                                 "the first run of policy web")[0]
        assert first.report["status"] == "success", first.report
        assert sorted(i.name for i in items) == [f"{tag}-{n}" for n in range(4)]
        assert {(i.status, i.result, i.attempts) for i in items} == {("done", "success", 1)}
        assert {i.pid for i in items} == {servers[0].pid, servers[1].pid}, "one proxy did the whole run"

        # The next run: kill proxy a while it backs up a server.
        claimed = _wait_for(lambda: [i for r, its in _web_runs(url) if r.id != first.id for i in its
                                     if i.status == "claimed" and i.pid == servers[0].pid], 120,
                            "proxy a to claim a server of the second run")[0]
        os.killpg(servers[0].pid, signal.SIGKILL)
        servers[0].wait()
        second, items = _wait_for(lambda: [r for r in _web_runs(url) if r[0].id == claimed.run_id
                                           and r[0].status == "done"], 180, "the second run to finish")[0]
        taken_over = next(i for i in items if i.id == claimed.id)
        assert (taken_over.attempts, taken_over.pid) == (2, servers[1].pid)
        assert {i.result for i in items} <= {"success", "warning"} and len(items) == 4
        assert second.report["status"] in ("success", "warning"), second.report
        # Each proxy has its own working state: a server the other proxy backed up last time is read
        # against a base rebuilt from the repository, which is said, and is no failure.
        warnings = [w for i in items for w in i.report.get("warnings", [])]
        assert all("rebuilt from" in w for w in warnings), warnings
    finally:
        for server in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=300)
    assert servers[1].returncode == 0, logs[1].read_text()
    proxies[1].run("cleanup", catalog=url)  # what the killed proxy's backup had made
    left = proxies[1].run("cleanup", "--dry-run", catalog=url).data
    assert not (left["images"] or left["snapshots"] or left["volumes"]), left
