"""A `run-policy` killed mid-run (a reboot, Ctrl-C) does not block its policy for good: the next
`run-policy` of a cron user finds the run's job abandoned (its lease ended) and finishes it, while a
run whose proxy is alive is still refused."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import update

from stackvault.catalog import Catalog
from stackvault.catalog.models import JobRow
from stackvault.catalog.queue import PolicyQueue
from stackvault.engine.repository import hostname

from .helpers import Stackvault, one_error


def _unfinished_run(sv: Stackvault, holder_pid: int, lease_s: float) -> str:
    """A queued run of policy `web` whose recording job is held by `holder_pid` with a lease ending in
    `lease_s` (a living holder renews it; a killed one's ends)."""
    repo_id = sv.run("init", "--block-size", "64KiB").data["id"]
    catalog = Catalog(sv.catalog_url)
    queue = PolicyQueue(catalog, repo_id)
    run_id = queue.open_run("web", datetime(2026, 12, 7, 2, 0, tzinfo=UTC), "full", [])
    assert run_id is not None
    job_id = catalog.start_job("policy", repo_id)
    with catalog.session() as s, s.begin():
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            host=hostname(), pid=holder_pid, lease_expires=time.time() + lease_s))
    queue.set_job(run_id, job_id, {})
    catalog.close()
    return run_id


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "sv.toml"
    cfg.write_text('[policy.web]\nschedule = "0 2 * * *"\nservers = ["web-1"]\n')
    return cfg


def test_a_run_left_by_a_killed_run_policy_is_finished_by_the_next(tmp_path: Path) -> None:
    sv = Stackvault(tmp_path / "sv")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_id = _unfinished_run(sv, int(dead.stdout), -1)
    report = sv.run("run-policy", "web", globals_=["--config", str(_config(tmp_path))]).data
    assert (report["run_id"], report["status"]) == (run_id, "success"), report


def test_a_run_whose_proxy_is_alive_is_still_refused(tmp_path: Path) -> None:
    sv = Stackvault(tmp_path / "sv")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _unfinished_run(sv, alive.pid, 120)
        res = sv.run("run-policy", "web", globals_=["--config", str(_config(tmp_path))], expect=None)
        one_error(res, "policy web is already running", rc=75)
    finally:
        alive.kill()
        alive.wait()
