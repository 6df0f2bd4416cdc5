"""Both quiesce behaviours of Nova's libvirt driver, for a server whose image requires quiesce
(`os_require_quiesce=yes`) and whose guest agent never answers: by default the current one (the
image-backed snapshot goes on unquiesced), `strict` the one up to Wallaby (it fails, the image is
deleted, the reason is in the instance action). A volume-backed snapshot is 409 in both."""

from __future__ import annotations

from typing import Any

import pytest

from devcloud.nova.testing import IMAGE_AGENT_DEAD, NovaUser, quiesce_mode, wait_active, wait_for

pytestmark = [pytest.mark.devcloud]


@pytest.fixture(scope="module")
def dead_image(images) -> str:
    return images[IMAGE_AGENT_DEAD]


def gone(nova: NovaUser, server_id: str) -> None:
    nova("DELETE", f"/servers/{server_id}")
    wait_for("server gone", lambda: server_id not in {
        s["id"] for s in nova("GET", "/servers")["servers"]}, timeout=300)


def glance_status(devcloud, nova: NovaUser, image_id: str) -> str | None:
    from devcloud import rest
    url = f"{devcloud.ctx.public_url('glance').rstrip('/')}/v2/images/{image_id}"
    try:
        return str(rest.request("GET", url, token=nova.token)[2]["status"])
    except rest.ApiError as exc:
        if exc.status == 404:
            return None
        raise


def snapshot_event(nova: NovaUser, server_id: str) -> dict[str, Any]:
    """The createImage action's compute_snapshot_instance event, once it finished."""
    actions = nova("GET", f"/servers/{server_id}/os-instance-actions")["instanceActions"]
    action = next(a for a in actions if a["action"] == "createImage")
    path = f"/servers/{server_id}/os-instance-actions/{action['request_id']}"

    def finished() -> dict[str, Any] | None:
        events = nova("GET", path, version="2.84")["instanceAction"]["events"]
        return next((e for e in events if e["event"] == "compute_snapshot_instance"
                     and e["finish_time"]), None)
    return wait_for("the snapshot event to finish", finished, timeout=120)


@pytest.mark.parametrize("mode", ["current", "strict"])
def test_image_backed_snapshot_with_a_dead_agent(devcloud, demo, dead_image, mode):
    with quiesce_mode(devcloud, mode):
        server_id = demo.boot(f"quiesce-{mode}", dead_image)
        try:
            wait_active(demo, server_id)
            image_id = demo("POST", f"/servers/{server_id}/action",
                            {"createImage": {"name": f"snap-{mode}"}}, version="2.45")["image_id"]
            event = snapshot_event(demo, server_id)
            if mode == "current":
                assert event["result"] == "Success"
                wait_for("the image ACTIVE", lambda: glance_status(devcloud, demo, image_id)
                         == "active", timeout=120)
                demo("DELETE", f"/images/{image_id}", version="2.35")
            else:
                assert event["result"] == "Error"
                assert "Failed to quiesce instance" in event["details"]
                wait_for("the image deleted", lambda: glance_status(devcloud, demo, image_id)
                         is None, timeout=120)
            assert wait_active(demo, server_id)["OS-EXT-STS:task_state"] is None
        finally:
            gone(demo, server_id)


@pytest.mark.parametrize("mode", ["current", "strict"])
def test_volume_backed_snapshot_with_a_dead_agent_is_409(devcloud, demo, dead_image, mode):
    with quiesce_mode(devcloud, mode):
        server_id = demo("POST", "/servers", {"server": {
            "name": f"quiesce-vol-{mode}", "flavorRef": "1", "networks": "auto",
            "block_device_mapping_v2": [{"boot_index": 0, "uuid": dead_image,
                                         "source_type": "image", "destination_type": "volume",
                                         "volume_size": 1, "delete_on_termination": True}]}}
        )["server"]["id"]
        try:
            wait_active(demo, server_id)
            status, message = demo.status("POST", f"/servers/{server_id}/action",
                                          {"createImage": {"name": f"snap-vol-{mode}"}})
            assert status == 409 and "Failed to quiesce instance" in message
        finally:
            gone(demo, server_id)
