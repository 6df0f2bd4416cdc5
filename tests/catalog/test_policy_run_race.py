"""Two proxies opening a run of one policy at the same instant (a `run-policy` and a server, on
PostgreSQL within milliseconds): exactly one run is opened, the other opener is told so, and the
database itself refuses a second unfinished run of a policy (`catalog_url` is parametrized)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from stackvault.catalog import Catalog
from stackvault.catalog.models import PolicyRunRow
from stackvault.catalog.queue import PolicyQueue, QueueItem

SLOT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
ROUNDS = 12


def test_two_racing_openers_make_one_run(catalog_url: str) -> None:
    queues = [PolicyQueue(Catalog(catalog_url), "repo-1") for _ in range(2)]
    for q in queues:  # connections made and the schema checked before the race, so both start together
        assert q.unfinished_run("warm-up") is None
    def opener(i: int, policy: str, barrier: threading.Barrier, opened: list[str | None]) -> None:
        barrier.wait()
        opened[i] = queues[i].open_run(policy, SLOT + timedelta(milliseconds=i), "full",
                                       [QueueItem("server", "s1", "web-1")])

    for n in range(ROUNDS):
        barrier = threading.Barrier(2)
        opened: list[str | None] = [None, None]
        threads = [threading.Thread(target=opener, args=(i, f"web{n}", barrier, opened)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [r for r in opened if r is not None]
        assert len(winners) == 1, f"round {n}: {opened}"
        assert queues[0].unfinished_run(f"web{n}").id == winners[0]  # type: ignore[union-attr]
    with queues[0].catalog.session() as s:
        assert len(s.scalars(select(PolicyRunRow)).all()) == ROUNDS


def test_the_database_refuses_a_second_unfinished_run_of_a_policy(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    queue = PolicyQueue(catalog, "repo-1")
    first = queue.open_run("web", SLOT, "full", [])
    assert first is not None
    row = dict(repo_id="repo-1", policy="web", level="full", status="queued", created="2026-12-07T02:00:01+00:00",
               report={})
    with pytest.raises(IntegrityError), catalog.session() as s, s.begin():  # past open_run's own check
        s.add(PolicyRunRow(id="second", slot=(SLOT + timedelta(seconds=1)).isoformat(), **row))
    queue.complete_run(first, {"status": "success"})
    with catalog.session() as s, s.begin():  # once the first is done, the next run opens
        s.add(PolicyRunRow(id="next", slot=(SLOT + timedelta(seconds=2)).isoformat(), **row))
    assert queue.unfinished_run("web").id == "next"  # type: ignore[union-attr]


def test_the_upgrade_closes_a_raced_second_run_with_its_items(catalog_url: str) -> None:
    """A catalog that already holds two unfinished runs of a policy (the race, before the unique index)
    keeps the older one; the newer is closed as failed, and so are its items, which nobody would ever
    claim and the queue metric must not count."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from stackvault.catalog import schema
    from stackvault.observe.metrics import queue_depth

    old = create_engine(catalog_url)
    with old.begin() as conn:
        command.upgrade(schema.alembic_config(conn), "0003_policy_queue")
    with old.begin() as conn:
        for run, created in (("older", "2026-12-07T02:00:00+00:00"), ("newer", "2026-12-07T02:00:00.5+00:00")):
            conn.execute(text("INSERT INTO policy_runs (id, repo_id, policy, slot, level, status, created, report) "
                              "VALUES (:id, 'repo-1', 'web', :slot, 'full', 'queued', :created, '{}')"),
                         {"id": run, "slot": f"2026-12-07T02:00:00+00:00/{run}", "created": created})
            conn.execute(text("INSERT INTO policy_items (run_id, kind, item_id, name, status, attempts, report) "
                              "VALUES (:run, 'server', :item, 'n', 'queued', 0, '{}')"), {"run": run, "item": run})
    old.dispose()

    catalog = Catalog(catalog_url)
    queue = PolicyQueue(catalog, "repo-1")
    assert queue.unfinished_run("web").id == "older"  # type: ignore[union-attr]
    statuses = {i.item_id: (i.status, i.result) for run in ("older", "newer") for i in queue.items(run)}
    assert statuses == {"older": ("queued", None), "newer": ("done", "failed")}
    assert queue_depth(catalog.engine) == {("repo-1", "web", "", "queued"): 1}
