"""A volume whose snapshot Cinder refuses fails before its backup begins: it still counts, once, in
`stackvault_backup_failures_total`, and is a failed `backup` job in `stackvault jobs` with the error,
whether a policy or `backup --volume` (a cron user's command) asked for it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from e2e.test_metrics import _samples, _value

pytestmark = pytest.mark.devcloud

SNAPSHOT_CREATE = r"/snapshots$"


@pytest.mark.parametrize("started_by", ["policy", "command"])
def test_a_snapshot_cinder_refuses_counts_as_a_failure_of_its_volume(user, faults, conn, tmp_path: Path,
                                                                     started_by: str) -> None:
    name = f"ref-{uuid.uuid4().hex[:6]}"
    vol = conn.block_storage.create_volume(size=1, name=name)
    try:
        conn.block_storage.wait_for_status(vol, "available", wait=120)
        user.config.write_text(user.config.read_text() + f'[policy.vols]\nvolumes = ["{name}"]\n')
        faults.add_fault("cinder", "status", 403, method="POST", path_regex=SNAPSHOT_CREATE)
        argv = ["run-policy", "vols"] if started_by == "policy" else ["backup", "--volume", name]
        report = user.run(*argv, expect=1).data
        [item] = report["volumes"]
        assert item["status"] == "failed" and item["volume_id"] == vol.id, item
        faults.clear_faults()

        textfile = tmp_path / "stackvault.prom"
        user.run("metrics", "--textfile", textfile)
        samples = _samples(textfile.read_text())
        assert _value(samples, "stackvault_backup_failures_total", kind="volume", id=vol.id) == 1
        assert _value(samples, "stackvault_backup_last_failure_timestamp_seconds", kind="volume", id=vol.id) > 0

        [job] = user.run("jobs", "--kind", "backup").data["jobs"]
        assert job["status"] == "failed" and job["policy"] == ("vols" if started_by == "policy" else None), job
        shown = user.run("jobs", "show", job["job_id"]).data
        assert shown["report"]["target"] == {"kind": "volume", "id": vol.id, "name": name}, shown
        assert item["error"] in (shown["message"] or ""), shown
    finally:
        conn.block_storage.delete_volume(vol, ignore_missing=True)
