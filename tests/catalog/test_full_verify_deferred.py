"""A full verify that finds the repository locked (a run's gc or prune holds it) is deferred, not failed:
its run stays open, this process stops renewing its lease, and the run is taken again once the lease
ends, so a weekly verify is not lost to a minute's gc. Real catalog and queue; `verify` itself is the
one function replaced, by one that finds the lock held."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from stackvault.catalog import Catalog
from stackvault.catalog.queue import PolicyQueue
from stackvault.config import Policy
from stackvault.errors import LockedError
from stackvault.service import policy_run


def test_a_locked_repository_defers_the_full_verify(catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = Catalog(catalog_url)
    queue = PolicyQueue(catalog, "repo-1")
    ctx = SimpleNamespace(catalog=catalog, repo=SimpleNamespace(id="repo-1"))
    policy = Policy("web", verify_full_schedule="0 4 * * sun")
    run_id = policy_run.enqueue_full_verify(ctx, queue, policy, datetime(2026, 12, 6, 4, tzinfo=UTC))  # type: ignore[arg-type]
    assert run_id is not None
    taken = queue.take_finished_run({policy_run.full_verify_name(policy)})
    assert taken is not None and taken.id == run_id

    def locked(*args: object, **kwargs: object) -> None:
        raise LockedError("repository is locked by gc of proxy-2", "wait for it to finish")

    monkeypatch.setattr(policy_run, "verify", locked)
    report = policy_run.full_verify(ctx, queue, policy, run_id)  # type: ignore[arg-type]
    assert report["status"] == policy_run.DEFERRED and "locked by gc" in report["error"], report
    run = queue.get_run(run_id)
    assert run.status != "done", "the slot's verify is still to do"
    assert catalog.job_status(run.job_id) == "running", "its job row is not closed as failed"
    monkeypatch.setattr(time, "time", lambda: 1e10)  # its lease has ended: the run is taken again
    again = queue.take_finished_run({policy_run.full_verify_name(policy)})
    assert again is not None and again.id == run_id
