"""A killed proxy's job row does not stay `running`, and jobs take the catalog's lock on the repository.

On SQLite and on PostgreSQL (`catalog_url` is parametrized): a backup SIGKILLed mid-way shows up in
`list --json` as interrupted, naming its host and pid, and the next backup runs; a job of another host
is marked only once its lease has ended, and not while it keeps renewing it; `gc` and `prune` wait for
a backup holding the catalog's shared lock and fail after `--wait` naming it, and a backup waits for gc.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from e2e.helpers import KIB, MIB, make_random_image
from sqlalchemy import select, update

from stackvault.catalog import Catalog
from stackvault.catalog.leases import LEASE_ENV
from stackvault.catalog.models import JobRow

from .test_catalog import child_env
from .test_cli_catalog import SharedCatalogSetup

# Each test waits out leases and lock timeouts of real CLI runs: the slow tier keeps the default one short.
pytestmark = pytest.mark.slow


def _jobs(catalog: Catalog) -> list[JobRow]:
    with catalog.session() as s:
        return list(s.scalars(select(JobRow).order_by(JobRow.started, JobRow.kind)))


def _wait_for(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_killed_backup_shows_as_interrupted_and_the_next_one_runs(catalog_url: str, tmp_path: Path) -> None:
    sv = SharedCatalogSetup(tmp_path / "sv", url=catalog_url)
    repo_id = sv.init("64KiB").data["id"]
    image = make_random_image(tmp_path / "disk.raw", 256 * MIB, random.Random(7))
    catalog = Catalog(catalog_url)

    victim = sv.popen("backup", "--source", f"file:{image}")
    _wait_for(lambda: any(j.status == "running" for j in _jobs(catalog)), what="the backup's running job row")
    time.sleep(0.2)  # into the reading; the whole Full takes ~1.3-2 s (four reader threads)
    assert victim.poll() is None, "the backup finished before it could be killed: give it a bigger disk"
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    (row,) = _jobs(catalog)
    assert (row.status, row.host, row.pid) == ("running", socket.gethostname(), victim.pid)  # nobody looked yet
    listed = sv.run("list").data
    (note,) = listed["interrupted_jobs"]
    assert (note["kind"], note["host"], note["pid"]) == ("backup", socket.gethostname(), victim.pid)
    assert note["message"] == (f"job {row.id} (backup) on host {socket.gethostname()} (pid {victim.pid}) "
                               f"stopped without finishing at {note['last_seen']}")
    assert listed["backups"] == []  # it committed nothing
    human = sv.run("list", json_out=False).stdout
    assert f"note: {note['message']}" in human

    report = sv.backup(image)
    assert report["status"] == "success"
    assert [(j.kind, j.status) for j in _jobs(catalog)] == [("backup", "interrupted"), ("backup", "success")]
    assert [b["backup_id"] for b in sv.run("list").data["backups"]] == [report["backup_id"]]
    assert catalog.reap_jobs(repo_id) == []  # nothing more to mark


HOLDER = textwrap.dedent("""
    import sys, time
    from stackvault.catalog import Catalog
    catalog = Catalog(sys.argv[1])
    print(catalog.start_job("backup", "repo-1"), flush=True)
    time.sleep(600)
""")


def test_a_job_of_another_host_is_interrupted_only_when_its_lease_ends(catalog_url: str) -> None:
    lease = 2.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, catalog_url], stdout=subprocess.PIPE, text=True,
                              env={**child_env(), LEASE_ENV: str(lease)})
    try:
        job = holder.stdout.readline().strip()
        catalog = Catalog(catalog_url)
        with catalog.session() as s, s.begin():  # as if that proxy ran on another host
            s.execute(update(JobRow).where(JobRow.id == job).values(host="proxy-elsewhere"))
        first = _jobs(catalog)[0].lease_expires
        time.sleep(lease * 1.5)
        assert catalog.reap_jobs("repo-1") == []  # alive: it renews its lease
        assert _jobs(catalog)[0].lease_expires > first
    finally:
        holder.kill()
        holder.wait()
    assert catalog.reap_jobs("repo-1") == []  # dead, but another host's: only its lease can tell
    time.sleep(lease + 0.5)
    (message,) = catalog.reap_jobs("repo-1")
    assert message.startswith(f"job {job} (backup) on host proxy-elsewhere (pid {holder.pid}) stopped without "
                              "finishing at ")
    (row,) = _jobs(catalog)
    assert (row.status, row.message, row.finished) == ("interrupted", message, row.heartbeat)


def test_gc_and_prune_wait_for_a_backup_holding_the_catalog_lock(catalog_url: str, tmp_path: Path) -> None:
    """Another proxy's backup holds the catalog's shared lock on the repository (its repository lock
    object is not visible here, as on an object store whose listing lags): gc and prune must wait.
    The "other proxy" is this test process, so the error names its pid."""
    sv = SharedCatalogSetup(tmp_path / "sv", url=catalog_url)
    init = sv.init("64KiB").data
    image = make_random_image(tmp_path / "disk.raw", 256 * KIB, random.Random(1))
    sv.backup(image)
    other = Catalog(catalog_url)
    job = other.start_job("backup", init["id"])
    started = _jobs(other)[-1].started
    with other.repository_lock(init["id"], init["repo"], shared=True, wait_s=0):
        sv.backup(image)  # backups share it
        for command in (["gc"], ["prune", "--keep-last", "1"]):
            t0 = time.monotonic()
            res = sv.run(*command, "--wait", "1.5", json_out=False, expect=75)
            assert time.monotonic() - t0 >= 1.5  # it waited
            (line,) = res.error_lines()
            assert line == (f"stackvault: error: another proxy is running backup on repository {init['repo']} "
                            f"since {started} (job {job} on host {socket.gethostname()}, pid {os.getpid()}; "
                            "waited 1.5 s) (retry later or raise --wait)"), res.describe()
    other.finish_job(job, "success")
    assert sv.run("gc").data["chunks_deleted"] == 0
    pruned = sv.run("prune", "--keep-last", "1").data
    assert len(pruned["kept"]) == 1 and len(pruned["removed"]) == 1
    kinds = [(j.kind, j.status) for j in _jobs(other) if j.kind in ("gc", "prune")]
    assert sorted(kinds) == [("gc", "failed"), ("gc", "success"), ("prune", "failed"), ("prune", "success")]


def test_a_backup_waits_for_gc_holding_the_catalog_lock(catalog_url: str, tmp_path: Path) -> None:
    sv = SharedCatalogSetup(tmp_path / "sv", url=catalog_url)
    init = sv.init("64KiB").data
    image = make_random_image(tmp_path / "disk.raw", 256 * KIB, random.Random(2))
    other = Catalog(catalog_url)
    job = other.start_job("gc", init["id"])
    with other.repository_lock(init["id"], init["repo"], shared=False, wait_s=0):
        res = sv.run("backup", "--source", f"file:{image}", "--wait", "1", json_out=False, expect=75)
        (line,) = res.error_lines()
        assert f"another proxy is running gc on repository {init['repo']} since " in line, res.describe()
        assert f"(job {job} on host {socket.gethostname()}" in line and "retry later or raise --wait" in line
    other.finish_job(job, "success")
    assert sv.backup(image)["status"] == "success"
    assert sv.list_ids() and len(sv.list_ids()) == 1  # the refused backup committed nothing
