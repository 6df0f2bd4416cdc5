"""Servers of the emulated Nova as users and stackvault meet them, through the `openstack` CLI
and openstacksdk: lifecycle, image-backed and volume-backed createImage, quiesce failures as
Nova reports them, volume attachment to the backup proxy, and Nova-side fault injection.

With a non-fast cloud every server here is a real QEMU guest (hence `guest`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from devcloud.nova.testing import (
    IMAGE_AGENT,
    IMAGE_AGENT_DEAD,
    action_events,
    cli_json,
    create_server,
    delete_server,
    quiesce_mode,
    raw_sha256,
    wait_for,
)

pytestmark = [pytest.mark.devcloud, pytest.mark.guest, pytest.mark.slow]


def server_show(dc, server_id: str) -> dict:
    return cli_json(dc, "server", "show", server_id)


def test_server_lifecycle_create_list_stop_start_metadata_tags_delete(devcloud):
    server = create_server(devcloud, "t-life")
    sid = server["id"]
    try:
        assert server["status"] == "ACTIVE"
        assert server["addresses"]["private"][0].startswith("10.0.0.")
        listed = {s["ID"]: s for s in cli_json(devcloud, "server", "list")}
        assert listed[sid]["Status"] == "ACTIVE" and listed[sid]["Image"] == IMAGE_AGENT

        devcloud.openstack("server", "stop", sid)
        wait_for("SHUTOFF", lambda: server_show(devcloud, sid)["status"] == "SHUTOFF", 120)
        assert server_show(devcloud, sid)["OS-EXT-STS:power_state"] in (4, "Shutdown")
        again = devcloud.openstack("server", "stop", sid, check=False)
        assert again.returncode != 0 and "while it is in vm_state stopped" in again.stderr
        devcloud.openstack("server", "start", sid)
        wait_for("ACTIVE", lambda: server_show(devcloud, sid)["status"] == "ACTIVE", 120)

        devcloud.openstack("server", "set", "--property", "backup=yes", "--tag", "gold", sid)
        shown = server_show(devcloud, sid)
        assert shown["properties"] == {"backup": "yes"} and shown["tags"] == ["gold"]
        tagged = cli_json(devcloud, "server", "list", "--tags", "gold")
        assert [s["ID"] for s in tagged] == [sid]

        actions = [a["Action"] for a in cli_json(devcloud, "server", "event", "list", sid)]
        assert actions[:3] == ["start", "stop", "create"]
        # image properties were copied into the instance at creation (system metadata)
        snap_props = cli_json(devcloud, "image", "show", IMAGE_AGENT)["properties"]
        assert snap_props["hw_qemu_guest_agent"] == "yes"
    finally:
        delete_server(devcloud, sid)
    assert sid not in {s["ID"] for s in cli_json(devcloud, "server", "list")}
    ports = cli_json(devcloud, "port", "list", "--device-id", sid)
    assert ports == []


def test_image_backed_snapshot_matches_the_disk_at_snapshot_time(devcloud, tmp_path):
    sid = create_server(devcloud, "t-snap")["id"]
    try:
        # stopped, so the disk cannot change between the snapshot and the comparison
        devcloud.openstack("server", "stop", sid)
        wait_for("SHUTOFF", lambda: server_show(devcloud, sid)["status"] == "SHUTOFF", 120)
        image = cli_json(devcloud, "server", "image", "create", "--wait", "--name",
                         "t-snap-img", sid)
        try:
            assert image["status"] == "active" and image["disk_format"] == "qcow2"
            props = image["properties"]
            assert props["image_type"] == "snapshot" and props["instance_uuid"] == sid
            assert props["hw_qemu_guest_agent"] == "yes"  # inherited from the instance
            out = tmp_path / "snap.qcow2"
            devcloud.openstack("image", "save", "--file", str(out), image["id"])
            disk = devcloud.state_dir / "nova" / "instances" / sid / "disk"
            assert raw_sha256(out, "qcow2") == raw_sha256(disk, "qcow2")
            assert server_show(devcloud, sid)["OS-EXT-STS:task_state"] is None
            events = action_events(devcloud, sid, "createImage")["events"]
            assert [(e["event"], e["result"]) for e in events] == [
                ("compute_snapshot_instance", "Success")]
        finally:
            devcloud.openstack("image", "delete", image["id"])
    finally:
        delete_server(devcloud, sid)


SDK_TASK_STATES = r"""
import json, sys, time, openstack
conn = openstack.connect()
server = conn.compute.find_server(sys.argv[1])
image = conn.compute.create_server_image(server, name=sys.argv[2], wait=False)
states = []
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    task = conn.compute.get_server(server.id).task_state
    if not states or states[-1] != task:
        states.append(task)
    if task is None and len(states) > 1:
        break
    time.sleep(0.05)
image = conn.image.wait_for_status(conn.image.get_image(image.id), "active", wait=300)
print(json.dumps({"states": states, "image": image.id}))
"""


def test_live_snapshot_walks_task_states_and_holds_data_written_in_the_guest(devcloud,
                                                                             tmp_path):
    sid = create_server(devcloud, "t-live")["id"]
    marker = os.urandom(24).hex().encode()
    try:
        if not devcloud.ctx.fast:
            hv = _hypervisor(devcloud)
            hv.wait_agent(sid, timeout=180)
            hv.guest_write_file(sid, "/data-marker.txt", marker * 100)
            rc, _, err = hv.guest_exec(sid, ["sync"])
            assert rc == 0, err
        run = devcloud.run_python(SDK_TASK_STATES, sid, "t-live-img")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        try:
            seen = [s for s in result["states"] if s]
            assert seen and set(seen) <= {"image_snapshot_pending", "image_snapshot",
                                          "image_pending_upload", "image_uploading"}
            assert result["states"][-1] is None
            if not devcloud.ctx.fast:
                out = tmp_path / "live.qcow2"
                devcloud.openstack("image", "save", "--file", str(out), result["image"])
                raw = tmp_path / "live.raw"
                os.system(f"qemu-img convert -f qcow2 -O raw {out} {raw}")  # noqa: S605 - pytest's tmp paths
                assert marker * 4 in raw.read_bytes()
        finally:
            devcloud.openstack("image", "delete", result["image"], check=False)
    finally:
        delete_server(devcloud, sid)


def test_volume_backed_snapshot_makes_cinder_snapshots_and_a_zero_byte_image(devcloud):
    server = create_server(devcloud, "t-bfv", boot_from_volume=1)
    sid = server["id"]
    try:
        assert server["image"] in ("", "N/A (booted from volume)")
        vol_id = server["volumes_attached"][0]["id"]
        image = cli_json(devcloud, "server", "image", "create", "--wait", "--name",
                         "t-bfv-img", sid)
        snaps: list[str] = []
        try:
            assert image["size"] == 0 and image["status"] == "active"
            mapping = json.loads(image["properties"]["block_device_mapping"])
            assert image["properties"]["root_device_name"] == "/dev/vda"
            assert [(m["source_type"], m["destination_type"], m["boot_index"])
                    for m in mapping] == [("snapshot", "volume", 0)]
            snaps = [m["snapshot_id"] for m in mapping]
            snap = wait_for("snapshot available", lambda: (
                lambda s: s if s["status"] == "available" else None)(
                cli_json(devcloud, "volume", "snapshot", "show", snaps[0])), 120)
            assert snap["volume_id"] == vol_id and snap["name"] == "snapshot for t-bfv-img"
            events = action_events(devcloud, sid, "createImage")["events"]
            assert [(e["event"], e["result"]) for e in events] == [
                ("api_snapshot_instance", "Success")]
            # booting that image makes a volume of each snapshot, as Nova does
            restored = create_server(devcloud, "t-bfv-restored", image["id"])
            new_vol = ""
            try:
                new_vol = restored["volumes_attached"][0]["id"]
                assert new_vol != vol_id
                assert cli_json(devcloud, "volume", "show", new_vol)["snapshot_id"] == snaps[0]
            finally:
                delete_server(devcloud, restored["id"])
                if new_vol:
                    devcloud.openstack("volume", "delete", new_vol, check=False)
        finally:
            devcloud.openstack("image", "delete", image["id"])
            for snap_id in snaps:
                devcloud.openstack("volume", "snapshot", "delete", snap_id)
    finally:
        delete_server(devcloud, sid)
        devcloud.openstack("volume", "delete", vol_id, check=False)


SDK_CREATE_IMAGE = r"""
import sys, openstack
conn = openstack.connect()
image = conn.compute.create_server_image(sys.argv[1], name=sys.argv[2], wait=False)
print(image.id)
"""


def _image_ids(dc) -> set[str]:
    return {i["ID"] for i in cli_json(dc, "image", "list")}


@pytest.fixture
def strict_quiesce(devcloud):
    """Nova's libvirt driver up to Wallaby (the dev cloud's default is the current one)."""
    with quiesce_mode(devcloud, "strict"):
        yield


def test_required_quiesce_with_dead_agent_fails_image_backed_snapshot_later(devcloud,
                                                                            strict_quiesce):
    sid = create_server(devcloud, "t-dead", IMAGE_AGENT_DEAD)["id"]
    try:
        before = _image_ids(devcloud)
        # the request is accepted (202); the snapshot fails on the compute side
        image_id = devcloud.run_python(SDK_CREATE_IMAGE, sid, "t-dead-img").stdout.strip()
        wait_for("the image to be deleted", lambda: image_id not in _image_ids(devcloud), 120)
        assert _image_ids(devcloud) == before
        shown = server_show(devcloud, sid)
        assert shown["status"] == "ACTIVE" and shown["OS-EXT-STS:task_state"] is None
        action = action_events(devcloud, sid, "createImage")
        assert action["message"] == "Error"
        event = action["events"][0]
        assert event["event"] == "compute_snapshot_instance" and event["result"] == "Error"
        assert "Failed to quiesce instance" in event["details"]
        assert "qemu-guest-agent" in event["details"]
    finally:
        delete_server(devcloud, sid)


def test_required_quiesce_with_dead_agent_is_409_for_volume_backed(devcloud):
    server = create_server(devcloud, "t-deadv", IMAGE_AGENT_DEAD, boot_from_volume=1)
    sid = server["id"]
    vol_id = server["volumes_attached"][0]["id"]
    try:
        before_images = _image_ids(devcloud)
        before_snaps = {s["ID"] for s in cli_json(devcloud, "volume", "snapshot", "list")}
        done = devcloud.openstack("server", "image", "create", "--name", "t-deadv-img", sid,
                                  check=False)
        assert done.returncode != 0
        assert "409" in done.stderr and "Failed to quiesce instance: " in done.stderr
        assert _image_ids(devcloud) == before_images
        assert {s["ID"] for s in cli_json(devcloud, "volume", "snapshot", "list")} == \
            before_snaps
    finally:
        delete_server(devcloud, sid)
        devcloud.openstack("volume", "delete", vol_id, check=False)


def _wait_volume(devcloud, vid: str, status: str, what: str) -> None:
    wait_for(what, lambda: cli_json(devcloud, "volume", "show", vid)["status"] == status, 120)


def test_attaching_a_volume_to_the_proxy_makes_its_device_symlink(devcloud):
    status = devcloud.status()
    proxy_id, root = status["proxy_server_id"], Path(status["proxy_device_root"])
    assert proxy_id
    vol = cli_json(devcloud, "volume", "create", "--size", "1", "t-proxy-vol")
    vid = vol["id"]
    try:
        _wait_volume(devcloud, vid, "available", "volume available")
        att = cli_json(devcloud, "server", "add", "volume", proxy_id, vid)
        assert att["Device"] == "/dev/vdb"
        _wait_volume(devcloud, vid, "in-use", "volume in-use")
        link = root / f"virtio-{vid[:20]}"
        assert link.is_symlink() and link.resolve().exists()
        assert link.resolve().stat().st_size == 1 << 30
        devcloud.openstack("server", "remove", "volume", proxy_id, vid)
        _wait_volume(devcloud, vid, "available", "volume available again")
        assert not link.exists() and not link.is_symlink()
    finally:
        devcloud.openstack("volume", "delete", vid, check=False)


def test_volume_attached_to_a_guest_shows_up_by_id_and_detaches(devcloud):
    sid = create_server(devcloud, "t-attach")["id"]
    vid = cli_json(devcloud, "volume", "create", "--size", "1", "t-attach-vol")["id"]
    try:
        _wait_volume(devcloud, vid, "available", "volume available")
        att = cli_json(devcloud, "server", "add", "volume", sid, vid)
        assert att["Device"] == "/dev/vdb"
        _wait_volume(devcloud, vid, "in-use", "volume in-use")
        listed = cli_json(devcloud, "server", "volume", "list", sid)
        assert [(v["Volume ID"], v["Device"]) for v in listed] == [(vid, "/dev/vdb")]
        # the guest sees a virtio disk whose serial is the volume id (what /dev/disk/by-id uses)
        serial = ["cat", "/sys/block/vdb/serial"]
        if not devcloud.ctx.fast:
            hv = _hypervisor(devcloud)
            hv.wait_agent(sid, timeout=180)
            wait_for("the disk in the guest", lambda: hv.guest_exec(
                sid, serial)[1].strip() == vid[:20].encode(), 60)
        devcloud.openstack("server", "remove", "volume", sid, vid)
        _wait_volume(devcloud, vid, "available", "volume available again")
        assert cli_json(devcloud, "server", "volume", "list", sid) == []
        if not devcloud.ctx.fast:
            wait_for("the disk gone from the guest", lambda: _hypervisor(devcloud).guest_exec(
                sid, serial)[0] != 0, 60)
        actions = [a["Action"] for a in cli_json(devcloud, "server", "event", "list", sid)]
        assert actions[:2] == ["detach_volume", "attach_volume"]
    finally:
        delete_server(devcloud, sid)
        devcloud.openstack("volume", "delete", vid, check=False)


def test_nova_faults_quota_exceeded_and_hang_snapshot(devcloud):
    devcloud.add_fault("nova", "quota-exceeded", method="POST", path_regex=r"/servers$",
                       count=1)
    try:
        refused = devcloud.openstack("server", "create", "--image", IMAGE_AGENT, "--flavor",
                                     "m1.tiny", "--network", "private", "t-quota", check=False)
        assert refused.returncode != 0 and "Quota exceeded for instances" in refused.stderr
    finally:
        devcloud.clear_faults()
    sid = create_server(devcloud, "t-hang")["id"]
    try:
        devcloud.add_fault("nova", "hang-snapshot", path_regex=r"/action$", count=1)
        image_id = devcloud.run_python(SDK_CREATE_IMAGE, sid, "t-hang-img").stdout.strip()
        wait_for("image_uploading", lambda: server_show(devcloud, sid)[
            "OS-EXT-STS:task_state"] == "image_uploading", 120)
        time.sleep(3)
        assert server_show(devcloud, sid)["OS-EXT-STS:task_state"] == "image_uploading"
        assert cli_json(devcloud, "image", "show", image_id)["status"] == "queued"
    finally:
        devcloud.clear_faults()
        delete_server(devcloud, sid)
    wait_for("the hung image to be cleaned up", lambda: image_id not in _image_ids(devcloud), 60)


def _hypervisor(dc):
    from devcloud.guest.hypervisor import Hypervisor
    return Hypervisor(dc.state_dir / "nova" / "guests",
                      image_cache=Path(os.environ.get("DEVCLOUD_GUEST_CACHE")
                                       or dc.ctx.cache_dir / "guest"))
