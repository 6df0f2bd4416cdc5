"""A policy deleted while one of its runs is unfinished (a policy written through the API, deleted
through it): the run, its queued items and its job row end as failed, saying why, so a new policy of
that name can run again; an item being backed up finishes on its own. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from stackvault.catalog import Catalog
from stackvault.catalog.models import JobRow
from stackvault.catalog.queue import PolicyQueue, QueueItem

SLOT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
WHY = "policy web was deleted through the API while this run was unfinished"


def test_a_deleted_policys_run_ends_and_the_name_runs_again(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    try:
        queue = PolicyQueue(catalog, "repo-1")
        job_id = catalog.start_job("policy", "repo-1")
        items = [QueueItem("server", f"srv-{i}", f"web{i}") for i in range(3)]
        run_id = queue.open_run("web", SLOT, "incremental", items, job_id)
        other = queue.open_run("db", SLOT, "incremental", items)
        claim = queue.claim({"web"}, [], run_id)  # one item is being backed up
        assert run_id and other and claim
        assert queue.open_run("web", SLOT.replace(hour=3), "incremental", items) is None, "one run at a time"

        assert queue.end_runs(["web", "web/full-verify"], WHY) == [run_id]
        assert queue.unfinished_run("web") is None and queue.unfinished_run("db") is not None
        results = {i.item_id: (i.status, i.result, (i.report or {}).get("error")) for i in queue.items(run_id)}
        assert results == {"srv-0": ("claimed", None, None), "srv-1": ("done", "failed", WHY),
                           "srv-2": ("done", "failed", WHY)}, results
        with catalog.session() as s:
            job = s.get(JobRow, job_id)
            assert job is not None and (job.status, job.message) == ("failed", WHY)
        assert queue.get_run(run_id).report["error"] == WHY
        queue.finish(claim, "success", {"server_id": "srv-0", "status": "success"})  # the running one ends
        assert queue.open_run("web", SLOT.replace(hour=3), "incremental", items) is not None, "the name runs again"
    finally:
        catalog.close()
