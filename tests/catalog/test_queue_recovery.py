"""The queue recovers on its own (`catalog_url` is parametrized: SQLite and a real PostgreSQL): a claim
whose end could not be written goes back to the queue at the end of its lease, for this very process
too; items of an availability zone no proxy serves end as failed after the policy's wait, naming the
zone and the fix, so that their run finishes; a policy's newest slot is its newest run's, whatever
the UTC offsets its slots carry."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import OperationalError

from stackvault.catalog import Catalog
from stackvault.catalog.leases import LEASE_ENV
from stackvault.catalog.queue import DONE, PolicyQueue, QueueItem

SLOT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def test_a_claim_whose_end_was_not_written_is_taken_again_by_its_own_process(
        catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEASE_ENV, "1")
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    run_id = queue.open_run("web", SLOT, "full", [QueueItem("server", "s1", "web-1")])
    first = queue.claim({"web"}, [], run_id)
    assert first is not None

    session = queue.catalog.session

    def database_away():  # the database restarting just as the item ends: one failed transaction
        monkeypatch.setattr(queue.catalog, "session", session)
        raise OperationalError("UPDATE policy_items", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(queue.catalog, "session", database_away)
    with pytest.raises(OperationalError):
        queue.finish(first, "success", {"server_id": "s1", "status": "success"})
    deadline = time.monotonic() + 30
    while (again := queue.claim({"web"}, [], run_id)) is None:
        assert time.monotonic() < deadline, "the item never came back to the queue"
        time.sleep(0.2)
    assert again.id == first.id and again.item == first.item
    queue.finish(again, "success", {"server_id": "s1", "status": "success"})
    assert [i.attempts for i in queue.items(run_id)] == [2]
    assert queue.take_finished_run({"web"}, run_id) is not None


def test_items_of_a_zone_no_proxy_serves_fail_after_the_wait_and_their_run_finishes(catalog_url: str) -> None:
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    items = [QueueItem("server", f"a{i}", f"web-a{i}", "az1") for i in range(3)] + \
        [QueueItem("server", f"z{i}", f"web-z{i}", "az9") for i in range(2)] + [QueueItem("volume", "v", "data")]
    run_id = queue.open_run("web", SLOT, "full", items)
    assert run_id is not None
    claims = [queue.claim({"web"}, ["az1"], run_id) for _ in range(2)]  # an az1 item and the zoneless one
    for claim in claims:
        assert claim is not None
        queue.finish(claim, "success", {f"{claim.item.kind}_id": claim.item.item_id, "status": "success"})
    assert queue.fail_unserved("web", 3600) == []  # the run is minutes old: nothing ends yet
    time.sleep(2.2)  # created is recorded to the second
    assert queue.fail_unserved("web", 1) == ["az9"]  # az1 is served (one of its items was taken): it waits
    ended = {i.item_id: i for i in queue.items(run_id) if i.availability_zone == "az9"}
    assert set(ended) == {"z0", "z1"} and all(i.status == DONE and i.result == "failed" for i in ended.values())
    assert ended["z0"].report == {"server_id": "z0", "name": "web-z0", "status": "failed", "error": (
        "no proxy took it in 1 s: none serves availability zone az9 (add az9 to a proxy's [cloud] "
        "availability_zones, or drop it from the policy's availability_zones)")}
    while (claim := queue.claim({"web"}, ["az1"], run_id)) is not None:
        queue.finish(claim, "success", {"server_id": claim.item.item_id, "status": "success"})
    assert queue.take_finished_run({"web"}, run_id) is not None


def test_the_newest_slot_is_the_newest_runs_across_the_autumn_change(catalog_url: str) -> None:
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    assert queue.last_slot("web") is None
    summer = datetime.fromisoformat("2026-10-25T02:30:00+02:00")
    winter = datetime.fromisoformat("2026-10-25T02:30:00+01:00")  # an hour later, but sorts first as text
    for slot in (summer, winter):
        run_id = queue.open_run("web", slot, "full", [])
        assert run_id is not None
        queue.complete_run(run_id, {"status": "success"})
    assert queue.last_slot("web") == winter


def test_a_run_whose_end_was_not_written_is_taken_again_by_its_own_process(
        catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LEASE_ENV, "1")
    queue = PolicyQueue(Catalog(catalog_url), "repo-1")
    run_id = queue.open_run("web", SLOT, "full", [])
    assert queue.take_finished_run({"web"}, run_id) is not None
    queue.release_run(run_id)  # what the server does when neither the run's end nor its failure can be written
    deadline = time.monotonic() + 30
    while queue.take_finished_run({"web"}, run_id) is None:
        assert time.monotonic() < deadline, "the run was never taken again"
        time.sleep(0.2)
    queue.complete_run(run_id, {"status": "success"})
    assert queue.unfinished_run("web") is None
