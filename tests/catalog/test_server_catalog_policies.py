"""`stackvault server` runs the policies kept in the catalog (those the API writes) beside the config's,
without a restart: one written while it runs is queued at its next slot, one deleted is run no more,
and one that does not parse is left out with one log line while the others run."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.helpers import Stackvault
from sqlalchemy import select

from stackvault.catalog import Catalog
from stackvault.catalog.models import JobRow, PolicyRunRow
from stackvault.catalog.policies import StoredPolicies

#: Every two seconds, a server of a cloud this machine has no entry for: each run is queued, then
#: recorded as failed with the reason, which is enough to show the policy was scheduled with its keys.
EVERY_TWO = {"project": "p-one", "schedule": "* * * * * */2", "servers": ["web-1"], "os_cloud": "nowhere"}


def _wait_for(what: str, predicate: Callable[[], object], timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.3)
    return value


def _runs(catalog: Catalog, policy: str) -> list[PolicyRunRow]:
    with catalog.reader() as s:
        return list(s.scalars(select(PolicyRunRow).where(PolicyRunRow.policy == policy)))


def _job(catalog: Catalog, job_id: str | None) -> JobRow | None:
    with catalog.reader() as s:
        return s.get(JobRow, job_id) if job_id else None


@pytest.mark.slow  # ~16 s per catalog: slots of two seconds, and reads of the catalog every five
def test_a_policy_written_into_the_catalog_is_run_and_a_deleted_one_stops(catalog_url: str, tmp_path: Path) -> None:
    sv = Stackvault(tmp_path / "sv")
    repo_id = sv.run("init", "--block-size", "64KiB", catalog=catalog_url).data["id"]
    config = tmp_path / "sv.toml"
    config.write_text("[policy.proxy-state]\nenabled = false\n")
    server = subprocess.Popen(sv.argv(["server"], json_out=False, globals_=["--config", str(config)],
                                      catalog=catalog_url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=sv.env(),
                              start_new_session=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(server.stderr or ()), daemon=True).start()
    catalog = Catalog(catalog_url)
    try:
        _wait_for("the server to serve", lambda: any("serving policies none" in line for line in log))
        stored = StoredPolicies(catalog, repo_id)
        assert stored.add("every-two", EVERY_TWO)
        assert stored.add("broken", {"project": "p-one", "schedule": "tomorrow", "all": True})

        _wait_for("a finished run of the catalog's policy",
                  lambda: [r for r in _runs(catalog, "every-two") if r.status == "done"])
        run = next(r for r in _runs(catalog, "every-two") if r.status == "done")
        job = _job(catalog, run.job_id)
        assert job is not None and job.kind == "policy" and job.status == "failed"
        assert "cloud nowhere is not configured" in job.message, job.message  # the stored policy's os_cloud
        assert any("policies in force: every-two" in line for line in log), log
        broken = [line for line in log if "broken" in line]  # said once, not at every read
        assert len(broken) == 1, log
        assert ("policy broken in the catalog is not in force: bad value 'tomorrow' for schedule of policy "
                "'broken' in the catalog: not a cron expression") in broken[0], broken

        assert stored.remove("every-two")
        _wait_for("the server to drop it", lambda: any("policies in force: none" in line for line in log))
        settled = len(_runs(catalog, "every-two"))
        time.sleep(5)  # two and a half slots
        assert len(_runs(catalog, "every-two")) == settled
        assert server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        catalog.close()
    assert server.returncode == 0, "".join(log)
    assert not [line for line in log if "Traceback" in line], "".join(log)

