"""A renamed server keeps its metric series: they are keyed by its id and carry its newest name, so no
stale series under the old name stays beside them (Prometheus would alert on it for ever)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from e2e.test_metrics import _samples

from .test_server_backup import _boot

pytestmark = pytest.mark.devcloud

SERVER_ACTION = r"/servers/[^/]+/action$"


def test_a_renamed_servers_series_carry_its_new_name_only(user, faults, conn, cloud_objects, tmp_path: Path) -> None:
    old = f"ren-{uuid.uuid4().hex[:6]}"
    server = _boot(conn, cloud_objects, old, "sv-noagent")
    assert user.run("backup", "--server", old).data["servers"][0]["status"] == "success"
    new = f"{old}-renamed"
    conn.compute.update_server(server, name=new)
    user.config.write_text(user.config.read_text() + f'[policy.web]\nservers = ["{new}"]\n')
    faults.add_fault("nova", "status", 403, method="POST", path_regex=SERVER_ACTION)  # the snapshot refused
    [item] = user.run("run-policy", "web", expect=1).data["servers"]
    assert item["status"] == "failed" and item["name"] == new, item
    faults.clear_faults()

    textfile = tmp_path / "stackvault.prom"
    user.run("metrics", "--textfile", textfile)
    series = {(name, labels["name"]) for (name, ls), _ in _samples(textfile.read_text()).items()
              if (labels := dict(ls)).get("id") == server.id}
    assert series == {("stackvault_backup_last_success_timestamp_seconds", new),
                      ("stackvault_backup_last_success_duration_seconds", new),
                      ("stackvault_backup_last_success_read_bytes", new),
                      ("stackvault_backup_last_success_stored_bytes", new),
                      ("stackvault_backup_last_success_consistency", new),
                      ("stackvault_backup_last_success_info", new),
                      ("stackvault_backup_failures_total", new),
                      ("stackvault_backup_last_failure_timestamp_seconds", new)}, sorted(series)
