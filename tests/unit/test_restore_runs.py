"""A restore started through the API, as its user follows it: bytes counted as the engine writes them,
`booting` once every disk is written, and a cancel that stops it at its next block."""

from __future__ import annotations

import pytest

from stackvault.api.restore_runs import RestoreCancelled, RestorePhase, RestoreRun


def _run() -> RestoreRun:
    return RestoreRun(id="job1", project_id="p", user_id="u", backup_id="b", server_name="web-restored",
                      flavor=None, network_ref=None, size=3 << 20)


def test_progress_counts_bytes_and_moves_to_booting_after_the_last_disk():
    run = _run()
    advance = run.progress("vda", 2 << 20)
    advance(1 << 20)
    assert (run.bytes_written, run.phase) == (1 << 20, RestorePhase.RESTORING)
    advance(1 << 20)
    run.progress("vdb", 1 << 20)(1 << 20)
    assert (run.bytes_written, run.phase) == (3 << 20, RestorePhase.BOOTING)


def test_a_cancel_stops_the_restore_at_its_next_block():
    run = _run()
    advance = run.progress("vda", 3 << 20)
    advance(1 << 20)
    run.cancel.set()
    with pytest.raises(RestoreCancelled) as raised:
        advance(1 << 20)
    assert run.bytes_written == 1 << 20
    assert raised.value.fix == "start it again when needed"


def test_a_finished_restore_reads_back_from_its_job_report():
    run = _run()
    run.phase, run.server_id, run.bytes_written = RestorePhase.ACTIVE, "srv", 3 << 20
    again = RestoreRun.from_report("job1", {**run.to_dict(), "user_id": "u", "trust_id": "t"})
    assert again.to_dict() == run.to_dict()
