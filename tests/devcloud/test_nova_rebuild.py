"""`rebuild`, the in-place restore of a server: same id, ports and attached volumes, a root disk
made anew from the new image; REBUILD then ACTIVE (or SHUTOFF again), the instance action
`rebuild`; 409 where Nova's state checks refuse it; a volume-backed server's different image
refused below 2.93 and its root volume re-imaged by Cinder from 2.93 on."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devcloud.nova.testing import IMAGE_AGENT, IMAGE_AGENT_DEAD, NovaUser, wait_for

pytestmark = [pytest.mark.devcloud]


def wait_status(nova: NovaUser, server_id: str, want: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        server = nova("GET", f"/servers/{server_id}")["server"]
        assert server["status"] != "ERROR" or want == "ERROR", server.get("fault")
        return server if server["status"] == want else None
    return wait_for(f"server {server_id} {want}", reached, timeout=300)


def delete(nova: NovaUser, server_id: str) -> None:
    nova("DELETE", f"/servers/{server_id}")
    wait_for("server gone", lambda: all(s["id"] != server_id for s in
                                        nova("GET", "/servers")["servers"]), timeout=300)


def same_disk(disk: Path, image: Path) -> bool:
    """What the guest sees on `disk` is the image (beyond the image's end: zeros)."""
    return subprocess.run(["qemu-img", "compare", "-U", "-F", "qcow2", str(disk), str(image)],
                          capture_output=True).returncode == 0


def made_from(disk: Path, image_id: str) -> bool:
    """The root disk is an overlay on the image's cached base (`_base/<sha1(image id)>`)."""
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     capture_output=True, check=True, text=True).stdout)
    base = hashlib.sha1(image_id.encode(), usedforsecurity=False).hexdigest()
    return Path(info["backing-filename"]).name == base


@pytest.fixture(scope="module")
def image_files(devcloud, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rebuild-images")
    files = {}
    for name in (IMAGE_AGENT, IMAGE_AGENT_DEAD):
        files[name] = out / f"{name}.qcow2"
        devcloud.openstack("image", "save", "--file", str(files[name]), name)
    return files


def test_rebuild_keeps_id_ports_and_volumes_and_makes_the_root_disk_from_the_new_image(
        devcloud, demo, images, image_files):
    server_id = demo.boot("rebuild-me", images[IMAGE_AGENT], metadata={"old": "1"})
    volume = devcloud.connect("devcloud-demo")
    vol = volume.block_storage.create_volume(size=1, name="rebuild-kept").id
    try:
        volume.block_storage.wait_for_status(volume.block_storage.get_volume(vol), "available",
                                             failures=["error"], wait=120)
        before = wait_status(demo, server_id, "ACTIVE")
        demo("POST", f"/servers/{server_id}/os-volume_attachments",
             {"volumeAttachment": {"volumeId": vol}})
        wait_for("volume in-use", lambda: volume.block_storage.get_volume(vol).status == "in-use",
                 timeout=120)
        disk = devcloud.state_dir / "nova" / "instances" / server_id / "disk"
        assert made_from(disk, images[IMAGE_AGENT])
        fast = devcloud.ctx.fast  # a real guest writes to its root disk once booted
        assert same_disk(disk, image_files[IMAGE_AGENT]) or not fast
        ports = {p["port_id"] for p in demo("GET", f"/servers/{server_id}/os-interface")
                 ["interfaceAttachments"]}

        reply = demo("POST", f"/servers/{server_id}/action", {"rebuild": {
            "imageRef": images[IMAGE_AGENT_DEAD], "name": "rebuilt", "metadata": {"new": "2"},
            "adminPass": "s3cret-Pass", "preserve_ephemeral": False}})["server"]
        assert reply["id"] == server_id and reply["status"] == "REBUILD"
        assert reply["adminPass"] == "s3cret-Pass" and reply["image"]["id"] == images[IMAGE_AGENT_DEAD]
        # a second rebuild while the first runs is refused by the state check
        busy = demo.status("POST", f"/servers/{server_id}/action",
                           {"rebuild": {"imageRef": images[IMAGE_AGENT]}})
        assert busy[0] == 409 and "task_state rebuild" in busy[1]

        after = wait_status(demo, server_id, "ACTIVE")
        assert after["name"] == "rebuilt" and after["metadata"] == {"new": "2"}
        assert after["addresses"] == before["addresses"]
        assert {p["port_id"] for p in demo("GET", f"/servers/{server_id}/os-interface")
                ["interfaceAttachments"]} == ports
        assert after["os-extended-volumes:volumes_attached"] == [
            {"id": vol, "delete_on_termination": False}]
        assert volume.block_storage.get_volume(vol).status == "in-use"
        assert made_from(disk, images[IMAGE_AGENT_DEAD])
        if fast:
            assert same_disk(disk, image_files[IMAGE_AGENT_DEAD])
            assert not same_disk(disk, image_files[IMAGE_AGENT])

        actions = demo("GET", f"/servers/{server_id}/os-instance-actions")["instanceActions"]
        assert actions[0]["action"] == "rebuild"
        shown = demo("GET", f"/servers/{server_id}/os-instance-actions/"
                            f"{actions[0]['request_id']}")["instanceAction"]
        assert [(e["event"], e["result"]) for e in shown["events"]] == [
            ("compute_rebuild_instance", "Success")]
    finally:
        delete(demo, server_id)
        volume.block_storage.wait_for_status(volume.block_storage.get_volume(vol), "available",
                                             failures=["error"], wait=120)
        volume.block_storage.delete_volume(vol, ignore_missing=True)


def test_rebuild_of_a_stopped_server_leaves_it_shutoff_and_of_an_error_server_active(
        admin, demo, images):
    server_id = demo.boot("rebuild-states", images[IMAGE_AGENT])
    path = f"/servers/{server_id}/action"
    try:
        wait_status(demo, server_id, "ACTIVE")
        demo("POST", path, {"os-stop": None})
        wait_status(demo, server_id, "SHUTOFF")
        demo("POST", path, {"rebuild": {"imageRef": images[IMAGE_AGENT]}})
        wait_status(demo, server_id, "SHUTOFF")
        admin("POST", path, {"os-resetState": {"state": "error"}})
        demo("POST", path, {"rebuild": {"imageRef": images[IMAGE_AGENT]}})
        assert wait_status(demo, server_id, "ACTIVE")["OS-EXT-STS:task_state"] is None
    finally:
        delete(demo, server_id)


def test_rebuild_is_refused_when_locked_or_asked_wrongly(admin, demo, images):
    server_id = demo.boot("rebuild-refused", images[IMAGE_AGENT])
    path = f"/servers/{server_id}/action"
    try:
        wait_status(demo, server_id, "ACTIVE")
        for bad in ({}, {"imageRef": images[IMAGE_AGENT], "flavorRef": "1"},
                    {"imageRef": images[IMAGE_AGENT], "name": "x" * 256},
                    {"imageRef": images[IMAGE_AGENT], "preserve_ephemeral": "sometimes"}):
            assert demo.status("POST", path, {"rebuild": bad})[0] == 400, bad
        missing = demo.status("POST", path, {"rebuild": {
            "imageRef": "00000000-0000-0000-0000-000000000000"}})
        assert missing[0] == 400 and "Cannot find image for rebuild" in missing[1]
        admin("POST", path, {"lock": None})
        locked = demo.status("POST", path, {"rebuild": {"imageRef": images[IMAGE_AGENT]}})
        assert locked[0] == 409 and "is locked" in locked[1]
        admin("POST", path, {"unlock": None})
        actions = [a["action"] for a in demo("GET", f"/servers/{server_id}/os-instance-actions")
                   ["instanceActions"]]
        assert "rebuild" not in actions
    finally:
        delete(demo, server_id)


def test_volume_backed_rebuild_refuses_another_image_below_2_93_and_reimages_from_2_93(
        devcloud, demo, images):
    conn = devcloud.connect()
    server = demo("POST", "/servers", {"server": {
        "name": "rebuild-bfv", "flavorRef": "1", "networks": "auto",
        "block_device_mapping_v2": [{"boot_index": 0, "uuid": images[IMAGE_AGENT],
                                     "source_type": "image", "destination_type": "volume",
                                     "volume_size": 1, "delete_on_termination": True}]}},
        version="2.92")["server"]
    server_id = server["id"]
    path = f"/servers/{server_id}/action"
    try:
        shown = wait_status(demo, server_id, "ACTIVE")
        root = shown["os-extended-volumes:volumes_attached"][0]["id"]
        other = {"rebuild": {"imageRef": images[IMAGE_AGENT_DEAD]}}
        refused = demo.status("POST", path, other, version="2.92")
        assert refused[0] == 400 and "volume-backed" in refused[1]
        demo("POST", path, {"rebuild": {"imageRef": images[IMAGE_AGENT]}}, version="2.92")
        wait_status(demo, server_id, "ACTIVE")

        demo("POST", path, other, version="2.93")
        after = wait_status(demo, server_id, "ACTIVE")
        assert after["os-extended-volumes:volumes_attached"][0]["id"] == root
        vol = conn.block_storage.get_volume(root)
        assert vol.status == "in-use"
        assert vol.volume_image_metadata["image_id"] == images[IMAGE_AGENT_DEAD]
    finally:
        delete(demo, server_id)


@pytest.mark.guest
@pytest.mark.slow
def test_rebuild_boots_a_real_guest_again_from_a_fresh_root_disk(devcloud, demo, images):
    if devcloud.ctx.fast:
        pytest.skip("needs a real guest")
    from devcloud.guest.hypervisor import Hypervisor
    hv = Hypervisor(devcloud.state_dir / "nova" / "guests")
    server_id = demo.boot("rebuild-guest", images[IMAGE_AGENT])
    try:
        wait_status(demo, server_id, "ACTIVE")
        hv.wait_agent(server_id, timeout=180)
        hv.guest_write_file(server_id, "/before-rebuild", b"written before the rebuild")
        hv.guest_exec(server_id, ["sync"])
        demo("POST", f"/servers/{server_id}/action", {"rebuild": {"imageRef": images[IMAGE_AGENT]}})
        wait_status(demo, server_id, "ACTIVE")
        hv.wait_agent(server_id, timeout=180)  # the guest booted again
        rc, _, _ = hv.guest_exec(server_id, ["test", "-e", "/before-rebuild"])
        assert rc != 0, "the file written before the rebuild is still on the root disk"
    finally:
        delete(demo, server_id)
