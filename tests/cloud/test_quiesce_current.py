"""stackvault against the quiesce behaviour of current Nova (the dev cloud's default): an
image-backed server whose image requires quiesce but whose guest agent never freezes is snapshot
anyway, so its backup succeeds with the consistency the image claims, and only its proof of
quiesce (missing) says that nothing on the disk backs the claim; a volume-backed one is still
refused by Nova (409) and fails alone. The strict behaviour of older releases:
test_server_backup.py."""

from __future__ import annotations

import uuid

import pytest

from devcloud.nova.testing import quiesce_mode

from .test_server_backup import _boot, _leftovers

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]


def test_failed_freeze_is_a_claim_for_image_backed_and_a_failure_for_volume_backed(
        user, devcloud, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    with quiesce_mode(devcloud, "current"):
        dead_image = _boot(conn, cloud_objects, f"cur-img-{tag}", "sv-agent-dead")
        dead_volume = _boot(conn, cloud_objects, f"cur-vol-{tag}", "sv-agent-dead",
                            volume_backed=True)
        result = user.run("backup", "--server", f"cur-*-{tag}", "--level", "full", expect=1).data
    by_name = {s["name"]: s for s in result["servers"]}
    assert result["status"] == "partial"
    item = by_name[dead_image.name]
    # stackvault cannot see the failed freeze: the image's claim is recorded, and only the
    # proof of quiesce says that nothing on the disk backs it
    assert item["status"] == "success" and item["consistency"] == "application", item
    assert item["quiesce_proof"]["status"] == "missing", item
    failed = by_name[dead_volume.name]
    assert failed["status"] == "failed" and "quiesce" in failed["error"].lower(), failed
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}
