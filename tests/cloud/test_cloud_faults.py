"""Injected cloud faults: retried within limits or failed with a clear message; nothing left behind;
the next run succeeds (the dev cloud's fault proxy sits in front of every service)."""

from __future__ import annotations

import uuid

import pytest

from .test_server_backup import _boot, _leftovers

pytestmark = pytest.mark.devcloud
MiB = 1 << 20
DOWNLOAD = r"/v2/images/[^/]+/file$"


@pytest.fixture
def faults(devcloud):  # noqa: ANN001, ANN201
    devcloud.clear_faults()
    yield devcloud
    devcloud.clear_faults()


def test_glance_5xx_and_dropped_download_are_retried(user, faults, conn, cloud_objects):  # noqa: ANN001
    name = f"flt-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    faults.add_fault("glance", "status", 503, method="GET", path_regex=DOWNLOAD, count=2)
    faults.add_fault("glance", "drop", 2 * MiB, method="GET", path_regex=DOWNLOAD, count=1)
    item = user.run("backup", "--server", name, "--level", "full").data["servers"][0]
    assert item["status"] == "success", item
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}


def test_persistent_glance_failure_is_clear_and_leaves_nothing(user, faults, conn, cloud_objects):  # noqa: ANN001
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


def test_snapshot_that_never_finishes_times_out_cleanly(user, faults, conn, cloud_objects):  # noqa: ANN001
    name = f"flt-{uuid.uuid4().hex[:6]}"
    _boot(conn, cloud_objects, name, "sv-noagent")
    user.config.write_text(user.config.read_text().replace("timeout = 300", "timeout = 15"))
    faults.add_fault("nova", "hang-snapshot", count=1)
    item = user.run("backup", "--server", name, expect=1).data["servers"][0]
    assert item["status"] == "failed" and "timed out" in item["error"] and name in item["error"], item
    leftovers = _leftovers(user)
    assert leftovers["images"] == [] and leftovers["volumes"] == [], leftovers
