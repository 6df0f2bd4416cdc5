"""A policy's full deep verify on its own schedule: `stackvault server` runs it at its slots, one at a
time, recorded as a `policy` job and a deep `verify` job of the whole repository that the metrics read;
a config naming a bad schedule is refused with one line."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from stackvault.catalog import Catalog
from stackvault.catalog.models import JobRow, PolicyRunRow

from .helpers import MIB, Stackvault, one_error
from .test_metrics import _samples, _value

#: Backups never come due (once a year); the full verify every three seconds.
CONFIG = '''
[policy.web]
schedule = "0 0 1 1 *"
servers = ["web-1"]
verify_full_schedule = "* * * * * */3"

[policy.proxy-state]
enabled = false
'''


def _rows(sv: Stackvault) -> tuple[list[PolicyRunRow], list[JobRow]]:
    catalog = Catalog(sv.catalog_url)
    try:
        with catalog.session() as s:
            return (list(s.scalars(select(PolicyRunRow).order_by(PolicyRunRow.created))),
                    list(s.scalars(select(JobRow).order_by(JobRow.started))))
    finally:
        catalog.close()


@pytest.mark.slow
def test_the_server_runs_a_full_deep_verify_at_its_slots(repo: Stackvault, rng: random.Random,
                                                         tmp_path: Path) -> None:
    disk = tmp_path / "a.img"
    disk.write_bytes(rng.randbytes(2 * MIB))
    repo.backup(disk, level="full")
    config = tmp_path / "sv.toml"
    config.write_text(CONFIG)
    server = subprocess.Popen(repo.argv(["server"], json_out=False, globals_=["--config", str(config)]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=repo.env(),
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            runs, jobs = _rows(repo)
            done = [r for r in runs if r.status == "done"]
            if len(done) >= 2:
                break
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, f"two full verifies expected in 90 s: {runs}"
            time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    runs, jobs = _rows(repo)
    assert {r.policy for r in runs} == {"web/full-verify"}, runs  # no backup run came due
    slots = [r.slot for r in runs]
    assert len(slots) == len(set(slots)), slots  # one run per slot
    done = [r for r in runs if r.status == "done"]
    assert all(r.report["status"] == "success" and r.report["verify"]["ok"] for r in done), [r.report for r in done]
    assert all(r.report["verify"]["chunks_read"] == r.report["verify"]["chunks_checked"] > 0 for r in done)
    verifies = [j for j in jobs if j.kind == "verify"]
    assert len(verifies) >= 2 and all(j.report["deep"] and j.report["whole_repository"]
                                      and j.report["sample"] is None for j in verifies), verifies
    assert "full verify for" in err

    listed = repo.run("jobs", "--policy", "web").data["jobs"]
    assert len(listed) >= 2 and all(j["status"] == "success" for j in listed), listed
    samples = _samples(_metrics(repo, tmp_path))
    assert _value(samples, "stackvault_verify_last_damaged_objects") == 0
    assert _value(samples, "stackvault_verify_last_timestamp_seconds", deep="true") > time.time() - 120


def _metrics(sv: Stackvault, tmp_path: Path) -> str:
    path = tmp_path / "stackvault.prom"
    sv.run("metrics", "--textfile", path)
    return path.read_text()


def test_a_bad_full_verify_schedule_is_one_line(repo: Stackvault, tmp_path: Path) -> None:
    config = tmp_path / "sv.toml"
    config.write_text(CONFIG.replace("* * * * * */3", "every sunday"))
    res = repo.run("run-policy", "web", globals_=["--config", str(config)], expect=None)
    one_error(res, "verify_full_schedule of policy 'web'", "not a cron expression", rc=2)
