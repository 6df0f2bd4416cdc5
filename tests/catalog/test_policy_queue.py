"""The policy queue on SQLite and on a real PostgreSQL (`catalog_url` is parametrized).

Two worker processes split one run's items exactly once; a SIGKILLed worker's item is claimed again
once its lease has ended, and not before, and so is a run a SIGKILLed proxy was finishing; a proxy
takes only items of its availability zones; a slot makes one run however often it is queued, and one
finisher finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from stackvault.catalog import Catalog
from stackvault.catalog.leases import LEASE_ENV
from stackvault.catalog.models import PolicyItemRow
from stackvault.catalog.queue import PolicyQueue, QueueItem
from stackvault.engine.repository import hostname

from .test_catalog import child_env

SLOT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)

#: A worker process: claims items of the run until none is left, holding each a little, and prints
#: the ids it took; with HOLD it claims one and keeps it (renewing its lease) until killed.
WORKER = textwrap.dedent("""
    import json, sys, time
    from stackvault.catalog import Catalog
    from stackvault.catalog.queue import PolicyQueue
    url, run_id, zones, hold = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "hold"
    queue = PolicyQueue(Catalog(url), "repo-1")
    if sys.argv[4] == "finish":
        print(json.dumps([queue.take_finished_run({"web"}).id]), flush=True)
        time.sleep(3600)
    taken = []
    while True:
        claim = queue.claim({"web"}, zones, run_id)
        if claim is None:
            break
        if hold:
            print(json.dumps([claim.item.item_id]), flush=True)
            time.sleep(3600)
        time.sleep(0.05)  # a backup takes a while: the other worker claims meanwhile
        queue.finish(claim, "success", {"server_id": claim.item.item_id, "status": "success"})
        taken.append(claim.item.item_id)
    print(json.dumps(taken), flush=True)
""")


def _worker(url: str, run_id: str, zones: list[str] | None = None, mode: str = "run") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, run_id, json.dumps(zones or []), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env())


def _items(n: int, zone: str | None = None) -> list[QueueItem]:
    return [QueueItem("server", f"srv-{zone or 'x'}-{i:02d}", f"web{i}", zone) for i in range(n)]


def test_two_workers_split_one_run_exactly_once(catalog_url: str) -> None:
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    run_id = queue.open_run("web", SLOT, "full", _items(24))
    assert run_id is not None
    workers = [_worker(catalog_url, run_id) for _ in range(2)]
    taken = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        taken.append(json.loads(out.strip().splitlines()[-1]))
    assert all(taken), f"one worker took nothing: {taken}"
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(i.item_id for i in _items(24))
    rows = queue.items(run_id)
    assert {(r.status, r.attempts) for r in rows} == {("done", 1)}


@pytest.mark.slow  # waits out leases: half a minute on each catalog
def test_a_killed_workers_item_is_taken_over_after_its_lease(catalog_url: str, monkeypatch) -> None:
    monkeypatch.setenv(LEASE_ENV, "2")
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    run_id = queue.open_run("web", SLOT, "full", _items(1))
    assert run_id is not None
    holder = _worker(catalog_url, run_id, mode="hold")
    assert holder.stdout is not None
    assert json.loads(holder.stdout.readline()) == ["srv-x-00"]
    time.sleep(3)  # past one lease: the living holder renews it
    assert queue.claim({"web"}, [], run_id) is None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 30
    claim = None
    while claim is None:
        assert time.monotonic() < deadline, "the killed worker's item was never claimed again"
        claim = queue.claim({"web"}, [], run_id)
        time.sleep(0.2)
    assert claim.item.item_id == "srv-x-00"
    row = queue.items(run_id)[0]
    assert (row.status, row.attempts, row.pid) == ("claimed", 2, os.getpid())
    queue.finish(claim, "success", {"server_id": "srv-x-00", "status": "success"})

    finisher = _worker(catalog_url, run_id, mode="finish")  # takes the run to finish it, and is killed
    assert finisher.stdout is not None
    assert json.loads(finisher.stdout.readline()) == [run_id]
    time.sleep(3)
    assert queue.take_finished_run({"web"}) is None  # its finisher is alive and renews its lease
    finisher.send_signal(signal.SIGKILL)
    finisher.wait()
    deadline = time.monotonic() + 30
    while (taken := queue.take_finished_run({"web"})) is None:
        assert time.monotonic() < deadline, "the killed finisher's run was never finished by another"
        time.sleep(0.2)
    assert taken.id == run_id and taken.pid == os.getpid()
    queue.complete_run(run_id, {"status": "success"})
    assert queue.unfinished_run("web") is None


def test_a_proxy_takes_only_items_of_its_availability_zones(catalog_url: str) -> None:
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    run_id = queue.open_run("web", SLOT, "full", _items(3, "az1") + _items(2, "az2"))
    assert run_id is not None
    worker = _worker(catalog_url, run_id, zones=["az2"])
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert sorted(json.loads(out)) == ["srv-az2-00", "srv-az2-01"]
    assert queue.take_finished_run({"web"}) is None  # az1's items wait for their proxy
    assert queue.depth() == 3


def test_one_run_per_policy_at_a_time_and_one_finisher(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    queue, other_proxy = PolicyQueue(catalog, "repo-1"), PolicyQueue(Catalog(catalog_url), "repo-1")
    run_id = queue.open_run("web", SLOT, "full", _items(1))
    assert run_id is not None
    assert other_proxy.open_run("web", SLOT, "full", _items(1)) is None  # the same slot, seen due elsewhere
    assert queue.open_run("web", SLOT.replace(hour=3), "incremental", []) is None  # still running
    assert PolicyQueue(catalog, "repo-2").open_run("web", SLOT, "full", []) is not None  # another repository's
    claim = queue.claim({"web"}, [])
    assert claim is not None
    queue.finish(claim, "success", {})
    assert other_proxy.take_finished_run({"web"}) is not None
    assert queue.take_finished_run({"web"}) is None
    queue.complete_run(run_id, {"status": "success"})
    assert queue.last_slot("web") == SLOT and queue.last_full("web") == SLOT
    later = queue.open_run("web", SLOT.replace(hour=3), "full", [])
    assert later is not None
    assert queue.last_full("web") == SLOT.replace(hour=3)  # planned: the next run must not be a Full too
    queue.complete_run(later, {"status": "failed"})
    assert queue.last_full("web") == SLOT  # a failed Full is followed by another
    assert queue.last_slot("web") == SLOT.replace(hour=3)



def test_an_item_whose_holders_keep_dying_fails_instead_of_being_claimed_for_ever(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    queue = PolicyQueue(catalog, "repo-1")
    run_id = queue.open_run("web", SLOT, "full", _items(1))
    assert run_id is not None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with catalog.session() as s, s.begin():  # killed three times already: its last holder is gone
        s.execute(update(PolicyItemRow).where(PolicyItemRow.run_id == run_id).values(
            status="claimed", attempts=3, host=hostname(), pid=int(dead.stdout), lease_expires=time.time() - 1))
    assert queue.claim({"web"}, [], run_id) is None
    [row] = queue.items(run_id)
    assert (row.status, row.result) == ("done", "failed")
    assert "stopped without finishing, 3 times" in row.report["error"]
    assert queue.take_finished_run({"web"}) is not None, "the run can be finished: the policy runs again"


def test_an_item_without_a_zone_is_taken_by_a_proxy_of_any_zone(catalog_url: str) -> None:
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    run_id = queue.open_run("web", SLOT, "full", _items(2))  # the cloud showed no zone for these
    assert run_id is not None
    worker = _worker(catalog_url, run_id, zones=["az2"])
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert sorted(json.loads(out)) == ["srv-x-00", "srv-x-01"]
    assert queue.take_finished_run({"web"}) is not None
