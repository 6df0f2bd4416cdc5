"""Real Cinder of the dev cloud, as Nova and stackvault meet it: volumes and snapshots as sparse
files, created, extended, snapshotted, attached, uploaded to Glance and deleted through
openstacksdk and the `openstack` CLI (both from the services venv, as users run them).

Data a guest would write through its disk is written here straight into the file that Cinder's
connection info names: that file *is* the device the guest (or the backup proxy) gets.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from devcloud import rest

pytestmark = [pytest.mark.devcloud]

GiB = 1 << 30
MiB = 1 << 20

# Prints one JSON document; every wait is an openstacksdk waiter, never a fixed sleep.
SDK_PRELUDE = r"""
import hashlib, json, sys, time, uuid, openstack
conn = openstack.connect()
bs = conn.block_storage
def wait_volume(vol, status="available"):
    return bs.wait_for_status(bs.get_volume(vol), status, failures=["error"], wait=300)
def sha256_of_image(image):
    digest = hashlib.sha256()
    for chunk in conn.image.download_image(image, stream=True).iter_content(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()
"""


def sdk(devcloud, body: str, *args: str, cloud: str | None = None) -> dict:
    """Run openstacksdk code in the services venv; it prints one JSON object as its last line."""
    out = devcloud.run_python(SDK_PRELUDE + body, *args, cloud_name=cloud, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_json(devcloud, *args: str, cloud: str | None = None):
    out = devcloud.openstack(*args, "-f", "json", cloud_name=cloud)
    return json.loads(out.stdout)


def volume_file(devcloud, volume_id: str) -> Path:
    return devcloud.state_dir / "cinder" / "volumes" / f"volume-{volume_id}"


def snapshot_file(devcloud, snapshot_id: str) -> Path:
    return devcloud.state_dir / "cinder" / "volumes" / f"snapshot-{snapshot_id}"


class CinderStatus:
    """Reads a volume's or snapshot's status over plain HTTP with an admin token.

    Waiting is the slow part of these tests when each poll starts the `openstack` CLI; the
    actions stay on the CLI and openstacksdk, the polling goes straight to the public endpoint.
    """

    def __init__(self, devcloud):
        ctx = devcloud.ctx
        self.token, body = rest.password_token(ctx.auth_url(), "admin", ctx.admin_password,
                                               "admin")
        self.base = f"{ctx.public_url('cinder')}/v3/{body['project']['id']}"

    def get(self, kind: str, ident: str) -> dict:
        plural = {"volume": "volumes", "volume snapshot": "snapshots"}[kind]
        return rest.request("GET", f"{self.base}/{plural}/{ident}", token=self.token)[2][
            plural[:-1]]


def wait_status(devcloud, kind: str, ident: str, want: str, timeout: float = 300) -> dict:
    """Wait until the volume or snapshot has status `want`; fail fast on an error status."""
    status = CinderStatus(devcloud)
    deadline = time.monotonic() + timeout
    while True:
        shown = status.get(kind, ident)
        if shown["status"] == want:
            return shown
        assert not shown["status"].startswith("error"), shown
        assert time.monotonic() < deadline, f"{kind} {ident} still {shown['status']}"
        time.sleep(0.3)


def wait_gone(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while path.exists():
        assert time.monotonic() < deadline, f"{path} still exists"
        time.sleep(0.2)


def write_at(path: Path, offset: int, data: bytes) -> None:
    """What a guest writing through its disk does to the backing file."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_scheduler_and_volume_service_each_send_their_own_heartbeat(devcloud):
    # One row per service and host: a cloud with Ceph has a second volume service (@ceph).
    first = {(s["Binary"], s["Host"]): s
             for s in cli_json(devcloud, "volume", "service", "list")}
    assert {b for b, _ in first} >= {"cinder-scheduler", "cinder-volume"}
    assert ("cinder-volume", "devcloud@sparse") in first
    assert all(s["State"] == "up" and s["Status"] == "enabled" for s in first.values()), first
    # report_interval is 5 s: within 12 s each row must have moved on its own.
    deadline = time.monotonic() + 12
    while True:
        later = {(s["Binary"], s["Host"]): s
                 for s in cli_json(devcloud, "volume", "service", "list")}
        moved = {k for k in first if later[k]["Updated At"] != first[k]["Updated At"]}
        if moved == set(first):
            break
        assert time.monotonic() < deadline, f"heartbeats that moved: {moved}"
        time.sleep(1)


@pytest.mark.slow
def test_empty_volume_is_a_sparse_file_that_extends_and_is_removed_on_delete(devcloud):
    name = f"cinder-empty-{uuid.uuid4().hex[:6]}"
    vol = cli_json(devcloud, "volume", "create", "--size", "1", name)
    wait_status(devcloud, "volume", vol["id"], "available")
    path = volume_file(devcloud, vol["id"])
    assert path.stat().st_size == 1 * GiB
    assert path.stat().st_blocks == 0, "a new volume must cost no disk space"
    listed = cli_json(devcloud, "volume", "list", "--name", name)
    assert [v["ID"] for v in listed] == [vol["id"]], "filtering by name must work"

    devcloud.openstack("volume", "set", "--size", "2", vol["id"])
    shown = wait_status(devcloud, "volume", vol["id"], "available")
    assert shown["size"] == 2
    assert path.stat().st_size == 2 * GiB

    devcloud.openstack("volume", "delete", vol["id"])
    wait_gone(path)


@pytest.mark.slow
def test_clone_copies_the_bytes_and_revert_brings_the_snapshot_back(devcloud):
    src = cli_json(devcloud, "volume", "create", "--size", "1", "cinder-clone-src")
    wait_status(devcloud, "volume", src["id"], "available")
    data = os.urandom(MiB)
    write_at(volume_file(devcloud, src["id"]), 5 * MiB, data)

    clone = cli_json(devcloud, "volume", "create", "--source", src["id"], "--size", "2",
                     "cinder-clone")
    wait_status(devcloud, "volume", clone["id"], "available")
    clone_path = volume_file(devcloud, clone["id"])
    assert read_at(clone_path, 5 * MiB, MiB) == data
    assert clone_path.stat().st_size == 2 * GiB

    snap = cli_json(devcloud, "volume", "snapshot", "create", "--volume", clone["id"],
                    "cinder-revert-point")
    wait_status(devcloud, "volume snapshot", snap["id"], "available")
    write_at(clone_path, 5 * MiB, b"\xff" * MiB)
    devcloud.openstack("volume", "revert", snap["id"])
    wait_status(devcloud, "volume", clone["id"], "available")
    assert read_at(clone_path, 5 * MiB, MiB) == data

    devcloud.openstack("volume", "snapshot", "delete", snap["id"])
    wait_gone(snapshot_file(devcloud, snap["id"]))
    devcloud.openstack("volume", "delete", clone["id"], src["id"])
    wait_gone(clone_path)
    wait_gone(volume_file(devcloud, src["id"]))


@pytest.mark.parametrize("disk_format", ["raw", "qcow2"])
def test_volume_from_image_holds_the_image_bytes(devcloud, tmp_path, disk_format):
    # 8 MiB of data followed by a hole: a raw disk image as guests have them.
    raw_path = tmp_path / "disk.raw"
    with open(raw_path, "wb") as fh:
        fh.write(os.urandom(8 * MiB))
        fh.truncate(64 * MiB)
    upload = raw_path
    if disk_format == "qcow2":  # Cinder converts it with qemu-img on the way in
        upload = tmp_path / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw_path),
                        str(upload)], check=True)
    result = sdk(devcloud, r"""
image = conn.image.create_image(name="cinder-src-" + uuid.uuid4().hex[:6],
                                disk_format=sys.argv[2], container_format="bare",
                                data=open(sys.argv[1], "rb"))
image = conn.image.wait_for_status(conn.image.get_image(image.id), "active", wait=120)
t0 = time.monotonic()
vol = bs.create_volume(size=1, image_id=image.id, name="cinder-from-image")
vol = wait_volume(vol)
took = time.monotonic() - t0
print(json.dumps({"image": image.id, "volume": vol.id, "bootable": vol.is_bootable,
                  "meta": vol.volume_image_metadata, "seconds": took}))
""", str(upload), disk_format)
    print(f"volume create from a 64 MiB {disk_format} image: {result['seconds']:.1f} s")
    path = volume_file(devcloud, result["volume"])
    assert read_at(path, 0, 64 * MiB) == raw_path.read_bytes()
    assert path.stat().st_size == 1 * GiB, "the volume keeps its own size, not the image's"
    assert result["bootable"] is True
    assert result["meta"]["image_id"] == result["image"]

    devcloud.openstack("volume", "delete", result["volume"])
    devcloud.openstack("image", "delete", result["image"])
    wait_gone(path)


@pytest.mark.slow
def test_forced_snapshot_of_attached_volume_and_volume_from_it(devcloud):
    """What Nova does for a volume-backed createImage: snapshot with force while in-use."""
    before, after = os.urandom(MiB), os.urandom(MiB)
    server_id = str(uuid.uuid4())
    attached = sdk(devcloud, r"""
vol = wait_volume(bs.create_volume(size=1, name="cinder-snap-src"))
att = bs.create_attachment(vol, instance=sys.argv[1],
                           connector={"host": "devcloud", "initiator": None, "multipath": False})
bs.complete_attachment(att)
vol = wait_volume(vol, "in-use")
print(json.dumps({"volume": vol.id, "attachment": att.id,
                  "connection_info": att.connection_info, "status": vol.status,
                  "server_id": vol.attachments[0]["server_id"]}))
""", server_id)
    path = volume_file(devcloud, attached["volume"])
    conn_info = attached["connection_info"]
    assert conn_info["driver_volume_type"] == "local"
    assert conn_info["device_path"] == str(path)
    assert attached["server_id"] == server_id
    write_at(path, 10 * MiB, before)

    refused = devcloud.openstack("volume", "snapshot", "create", "--volume", attached["volume"],
                                 "snap-no-force", check=False)
    assert refused.returncode != 0
    assert "in-use" in refused.stderr, refused.stderr

    # python-openstackclient 8 leaves `force` out of the body once the server supports 3.66,
    # yet openstacksdk then sends the request at 3.65, where Cinder still wants it: the plain
    # `--force` is refused for in-use volumes. Asking for 3.66 gives the intended behaviour.
    snap = cli_json(devcloud, "--os-volume-api-version", "3.66", "volume", "snapshot", "create",
                    "--force", "--volume", attached["volume"], "cinder-snap")
    wait_status(devcloud, "volume snapshot", snap["id"], "available")
    write_at(path, 10 * MiB, after)  # the guest goes on writing; the snapshot must not change
    assert read_at(snapshot_file(devcloud, snap["id"]), 10 * MiB, MiB) == before

    # What stackvault and Nova send through openstacksdk: force=true in the body.
    forced = sdk(devcloud, r"""
snap = bs.create_snapshot(volume_id=sys.argv[1], is_forced=True, name="cinder-sdk-snap")
snap = bs.wait_for_status(snap, "available", failures=["error"], wait=120)
bs.delete_snapshot(snap)
bs.wait_for_delete(snap, wait=120)
print(json.dumps({"id": snap.id}))
""", attached["volume"])
    assert not snapshot_file(devcloud, forced["id"]).exists()

    restored = cli_json(devcloud, "volume", "create", "--snapshot", snap["id"], "--size", "2",
                        "cinder-from-snap")
    wait_status(devcloud, "volume", restored["id"], "available")
    restored_path = volume_file(devcloud, restored["id"])
    assert read_at(restored_path, 10 * MiB, MiB) == before
    assert restored_path.stat().st_size == 2 * GiB

    # Detach as Nova does: with a service token, which Cinder requires before it lets an
    # attachment that carries connection info go (bug #2004555).
    detached = sdk(devcloud, r"""
from keystoneauth1 import loading, service_token, session as ks_session
service = loading.get_plugin_loader("password").load_from_options(
    auth_url=conn.config.config["auth"]["auth_url"], username="cinder", password=sys.argv[3],
    project_name="service", user_domain_name="Default", project_domain_name="Default")
conn.session.auth = service_token.ServiceTokenAuthWrapper(conn.session.auth, service)
bs.delete_attachment(sys.argv[1])
vol = wait_volume(sys.argv[2])
print(json.dumps({"status": vol.status}))
""", attached["attachment"], attached["volume"], devcloud.ctx.service_password)
    assert detached["status"] == "available"
    devcloud.openstack("volume", "delete", restored["id"])
    devcloud.openstack("volume", "snapshot", "delete", snap["id"])
    wait_gone(snapshot_file(devcloud, snap["id"]))
    devcloud.openstack("volume", "delete", attached["volume"])
    wait_gone(path)
    wait_gone(restored_path)


@pytest.mark.slow
def test_upload_to_image_gives_a_glance_image_with_the_volume_bytes(devcloud):
    """os-volume_upload_image of a 1 GiB volume, through real Cinder and real Glance."""
    vol = cli_json(devcloud, "volume", "create", "--size", "1", "cinder-upload-src")
    wait_status(devcloud, "volume", vol["id"], "available")
    path = volume_file(devcloud, vol["id"])
    for offset in (0, 300 * MiB, GiB - MiB):
        write_at(path, offset, os.urandom(MiB))
    expected = sha256_file(path)

    result = sdk(devcloud, r"""
vol = bs.get_volume(sys.argv[1])
t0 = time.monotonic()
info = bs.upload_volume_to_image(vol, "cinder-upload-" + uuid.uuid4().hex[:6],
                                 disk_format="raw", container_format="bare")
image = conn.image.wait_for_status(conn.image.get_image(info["image_id"]), "active",
                                   failures=["killed", "deleted"], wait=600)
took = time.monotonic() - t0
vol = wait_volume(vol)
print(json.dumps({"image": image.id, "size": image.size, "seconds": took,
                  "sha256": sha256_of_image(image), "volume_status": vol.status}))
""", vol["id"])
    print(f"upload-to-image of 1 GiB: {result['seconds']:.1f} s")
    assert result["size"] == GiB
    assert result["sha256"] == expected
    assert result["volume_status"] == "available"

    devcloud.openstack("image", "delete", result["image"])
    devcloud.openstack("volume", "delete", vol["id"])
    wait_gone(path)


@pytest.mark.slow
def test_snapshot_quota_zero_refuses_a_snapshot_with_cinders_message(devcloud):
    vol = cli_json(devcloud, "volume", "create", "--size", "1", "cinder-quota-src",
                   cloud="devcloud-demo")
    wait_status(devcloud, "volume", vol["id"], "available")
    original = {q["Resource"]: q["Limit"]
                for q in cli_json(devcloud, "quota", "show", "--volume", "demo")}["snapshots"]
    devcloud.openstack("quota", "set", "--snapshots", "0", "demo")
    try:
        refused = devcloud.openstack("volume", "snapshot", "create", "--volume", vol["id"],
                                     "over-quota", check=False, cloud_name="devcloud-demo")
        assert refused.returncode != 0
        assert "Maximum number of snapshots allowed (0) exceeded" in refused.stderr, \
            refused.stderr
        snaps = cli_json(devcloud, "volume", "snapshot", "list", cloud="devcloud-demo")
        assert [s for s in snaps if s["Name"] == "over-quota"] == []
    finally:
        devcloud.openstack("quota", "set", "--snapshots", str(original), "demo")
        devcloud.openstack("volume", "delete", vol["id"], cloud_name="devcloud-demo")
    wait_gone(volume_file(devcloud, vol["id"]))
