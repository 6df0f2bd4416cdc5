"""Injected cloud faults: retried within limits or failed with a clear message; nothing left behind;
the next run succeeds (the dev cloud's fault proxy sits in front of every service)."""

from __future__ import annotations

import uuid

import pytest

from .test_server_backup import _boot, _leftovers

pytestmark = pytest.mark.devcloud
MiB = 1 << 20
DOWNLOAD = r"/v2/images/[^/]+/file$"


@pytest.mark.slow
def test_glance_5xx_and_dropped_download_are_retried(user, faults, conn, cloud_objects):
    name = f"flt-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    faults.add_fault("glance", "status", 503, method="GET", path_regex=DOWNLOAD, count=2)
    faults.add_fault("glance", "drop", 2 * MiB, method="GET", path_regex=DOWNLOAD, count=1)
    item = user.run("backup", "--server", name, "--level", "full").data["servers"][0]
    assert item["status"] == "success", item
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}


@pytest.mark.slow  # waits out retries and a timeout: the slow tier keeps the default one short
def test_persistent_glance_failure_is_clear_and_leaves_nothing(user, faults, conn, cloud_objects):
    name = f"flt-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    faults.add_fault("glance", "status", 500, method="GET", path_regex=DOWNLOAD)
    result = user.run("backup", "--server", name, json_out=True, expect=1)
    item = result.data["servers"][0]
    assert item["status"] == "failed"
    assert "download of image" in item["error"] and "retries" in item["error"] and "HTTP 500" in item["error"]
    assert user.run("list", "--server", name).data["backups"] == []
    faults.clear_faults()
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}
    item = user.run("backup", "--server", name).data["servers"][0]
    assert item["status"] == "success" and item["level"] == "full", item


@pytest.mark.slow  # waits out retries and a timeout: the slow tier keeps the default one short
def test_snapshot_that_never_finishes_times_out_cleanly(user, faults, conn, cloud_objects):
    name = f"flt-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    user.config.write_text(user.config.read_text().replace("timeout = 300", "timeout = 15"))
    faults.add_fault("nova", "hang-snapshot", count=1)
    item = user.run("backup", "--server", name, expect=1).data["servers"][0]
    assert item["status"] == "failed" and "timed out" in item["error"] and name in item["error"], item
    leftovers = _leftovers(user)
    assert leftovers["images"] == [] and leftovers["volumes"] == [], leftovers


IMAGE = r"/v2/images/[^/]+$"


@pytest.mark.slow  # waits out retries and a timeout: the slow tier keeps the default one short
def test_failed_deletes_are_retried_then_reported_and_cleanup_removes_them(user, faults, conn, cloud_objects):
    name = f"flt-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    faults.add_fault("glance", "status", 500, method="DELETE", path_regex=IMAGE, count=2)
    item = user.run("backup", "--server", name, "--level", "full").data["servers"][0]
    assert item["status"] == "success", item  # two 500s, then the delete went through
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}

    faults.add_fault("glance", "status", 500, method="DELETE", path_regex=IMAGE)
    item = user.run("backup", "--server", name).data["servers"][0]
    assert item["status"] == "warning", item  # the backup is committed: a leftover does not fail it
    [warning] = [w for w in item["warnings"] if "left in the cloud" in w]
    [image] = _leftovers(user)["images"]
    assert f"image {image['id']}" in warning and "HTTP 500" in warning and "stackvault cleanup" in warning
    assert [b["backup_id"] for b in user.run("list", "--server", name).data["backups"]][-1] == item["backup_id"]

    still = user.run("cleanup", expect=1).data
    assert still["failed"] and image["id"] in still["failed"][0]
    faults.clear_faults()
    assert user.run("cleanup").data["failed"] == []
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}
