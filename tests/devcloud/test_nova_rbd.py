"""Cinder volumes on Ceph RBD in the emulated Nova, as libvirt connects them for real Nova.

Real parts: Cinder's own RBD driver (volume type `ceph`) on the dev cloud's single-node Ceph, QEMU's
rbd block driver under a TCG guest with a real qemu-guest-agent, rbd-fuse on the proxy, librbd in
this process to read what the guest wrote. What a user checks: a `ceph` volume attached to a
guest is a virtio disk with the volume's serial, what the guest writes is in the RBD image after
the detach; on the backup proxy the by-id path is a file with the image's bytes; a server booted
from a `ceph` volume runs from it, and its createImage freezes the guest's filesystems and makes
a Cinder snapshot that is an RBD snapshot holding what the guest had written just before.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from devcloud import ceph
from devcloud.nova.testing import IMAGE_AGENT, action_events, cli_json, delete_server, wait_for

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]

MiB, GiB = 1 << 20, 1 << 30


def _hypervisor(dc):
    from devcloud.guest.hypervisor import Hypervisor
    return Hypervisor(dc.state_dir / "nova" / "guests",
                      image_cache=Path(os.environ.get("DEVCLOUD_GUEST_CACHE") or dc.ctx.cache_dir / "guest"))


@pytest.fixture
def dc(devcloud_ceph):
    if "nova" in devcloud_ceph.skip:
        pytest.skip("needs Nova in the cloud with Ceph")
    return devcloud_ceph


@pytest.fixture
def guest_dc(dc):
    if dc.ctx.fast:
        pytest.skip("boots real QEMU guests: needs a cloud without fast mode")
    return dc


@pytest.fixture
def pool(dc):
    """The pool as client.admin, to read what guests wrote."""
    _, rbd = ceph.import_bindings(dc.state_dir)
    cluster = ceph.connect(dc.state_dir, "admin")
    try:
        with cluster.open_ioctx(ceph.POOL) as ioctx:
            yield rbd, ioctx
    finally:
        cluster.shutdown()


def _volume(dc, name: str) -> str:
    vid = cli_json(dc, "volume", "create", "--type", "ceph", "--size", "1", name)["id"]
    _wait_volume(dc, vid, "available")
    return vid


def _wait_volume(dc, vid: str, status: str) -> None:
    wait_for(f"volume {vid} {status}", lambda: cli_json(dc, "volume", "show", vid)["status"] == status, 120)


def _read(pool, image: str, offset: int, length: int, snapshot: str | None = None) -> bytes:
    rbd, ioctx = pool
    with rbd.Image(ioctx, image, snapshot=snapshot, read_only=True) as img:
        return img.read(offset, length)


def _allocated_contains(pool, image: str, snapshot: str, needle: bytes) -> bool:
    """Does the image at the snapshot hold `needle`? Reads only the extents librbd has data for."""
    rbd, ioctx = pool
    extents: list[tuple[int, int]] = []
    with rbd.Image(ioctx, image, snapshot=snapshot, read_only=True) as img:
        img.diff_iterate(0, img.size(), None,
                         lambda off, length, exists: extents.append((off, length)) if exists else None)
        for offset, length in extents:
            if needle in img.read(offset, length):
                return True
    return False


@pytest.mark.guest
def test_ceph_volume_attached_to_a_guest_holds_what_the_guest_wrote(guest_dc, pool) -> None:
    dc = guest_dc
    sid = cli_json(dc, "server", "create", "--image", IMAGE_AGENT, "--flavor", "m1.tiny", "--network",
                   "private", "--wait", "t-rbd-attach")["id"]
    vid = _volume(dc, "t-rbd-attach-vol")
    hv = _hypervisor(dc)
    try:
        att = cli_json(dc, "server", "add", "volume", sid, vid)
        assert att["Device"] == "/dev/vdb"
        _wait_volume(dc, vid, "in-use")
        [disk] = [d for d in hv.disks(sid) if d.target == "vdb"]
        assert disk.rbd is not None and (disk.rbd["pool"], disk.rbd["image"]) == (ceph.POOL, f"volume-{vid}")
        assert disk.rbd["user"] == ceph.CINDER_USER, "the user Cinder's connection info names"
        hv.wait_agent(sid, timeout=240)
        wait_for("the disk in the guest", lambda: hv.guest_exec(sid, ["cat", "/sys/block/vdb/serial"])[1].strip()
                 == vid[:20].encode(), 60)
        marker = f"written-in-the-guest-{uuid.uuid4().hex}".encode()
        t0 = time.monotonic()
        rc, _, err = hv.guest_exec(sid, ["sh", "-c", f"printf %s {marker.decode()} | dd of=/dev/disk/by-id/"
                                         f"virtio-{vid[:20]} bs=4096 seek=2560 conv=fsync 2>&1"], timeout=120)
        assert rc == 0, err
        # 8 MiB of random data through the guest's page cache, and its checksum as the guest reads it.
        rc, out, err = hv.guest_exec(sid, ["sh", "-c", "head -c 8388608 /dev/urandom > /tmp/r && dd if=/tmp/r "
                                           "of=/dev/vdb bs=1M seek=100 conv=fsync 2>/dev/null && sha256sum /tmp/r"],
                                     timeout=300)
        assert rc == 0, err
        write_s = time.monotonic() - t0
        guest_sum = out.split()[0].decode()
        dc.openstack("server", "remove", "volume", sid, vid)
        _wait_volume(dc, vid, "available")
        assert [d.target for d in hv.disks(sid)] == ["vda"]
        assert _read(pool, f"volume-{vid}", 2560 * 4096, len(marker)) == marker
        assert hashlib.sha256(_read(pool, f"volume-{vid}", 100 * MiB, 8 * MiB)).hexdigest() == guest_sum
        print(f"\nguest writes to its ceph volume: {write_s:.1f} s for 8 MiB + a marker (TCG guest)")
    finally:
        delete_server(dc, sid)
        dc.openstack("volume", "delete", vid, check=False)


def test_ceph_volume_on_the_proxy_is_an_rbd_fuse_file_behind_its_by_id_path(dc, pool) -> None:
    status = dc.status()
    proxy_id, root = status["proxy_server_id"], Path(status["proxy_device_root"])
    vid = _volume(dc, "t-rbd-proxy-vol")
    link = root / f"virtio-{vid[:20]}"
    try:
        assert cli_json(dc, "server", "add", "volume", proxy_id, vid)["Device"].startswith("/dev/vd")
        _wait_volume(dc, vid, "in-use")
        device = link.resolve()
        assert link.is_symlink() and device.name == f"volume-{vid}" and device.stat().st_size == GiB
        assert f"{device.parent} fuse.rbd-fuse" in Path("/proc/self/mounts").read_text()
        data = os.urandom(MiB)
        with open(link, "r+b") as fh:  # a restore writes through the same path
            fh.seek(300 * MiB)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        assert _read(pool, f"volume-{vid}", 300 * MiB, MiB) == data
        dc.openstack("server", "remove", "volume", proxy_id, vid)
        _wait_volume(dc, vid, "available")
        assert not link.is_symlink()
        assert f"{device.parent} " not in Path("/proc/self/mounts").read_text(), "unmounted at detach"
    finally:
        dc.openstack("server", "remove", "volume", proxy_id, vid, check=False)
        _wait_volume(dc, vid, "available")
        dc.openstack("volume", "delete", vid, check=False)


@pytest.mark.guest
def test_server_booted_from_a_ceph_volume_snapshots_quiesced_into_an_rbd_snapshot(guest_dc, pool) -> None:
    dc = guest_dc
    image_id = cli_json(dc, "image", "show", IMAGE_AGENT)["id"]
    t0 = time.monotonic()
    server = cli_json(dc, "--os-compute-api-version", "2.67", "server", "create", "--flavor", "m1.tiny",
                      "--network", "private", "--wait", "--block-device",
                      f"source_type=image,uuid={image_id},destination_type=volume,volume_size=1,"
                      "volume_type=ceph,boot_index=0,delete_on_termination=true", "t-rbd-bfv")
    sid = server["id"]
    vid = server["volumes_attached"][0]["id"]
    hv = _hypervisor(dc)
    snaps: list[str] = []
    image: dict = {}
    try:
        assert cli_json(dc, "volume", "show", vid)["type"] == "ceph"
        [root] = hv.disks(sid)
        assert root.target == "vda" and root.rbd is not None and root.rbd["image"] == f"volume-{vid}"
        hv.wait_agent(sid, timeout=240)
        boot_s = time.monotonic() - t0
        rc, mounts, _ = hv.guest_exec(sid, ["cat", "/proc/mounts"])
        assert rc == 0 and b"/dev/vda1 / " in mounts, mounts
        assert hv.guest_exec(sid, ["cat", "/sys/block/vda/serial"])[1].strip() == vid[:20].encode()
        # Written through the guest's page cache just before the snapshot, never synced by hand.
        marker = f"quiesced-{uuid.uuid4().hex}".encode()
        hv.guest_write_file(sid, "/quiesce-marker.txt", marker * 64)
        hv.guest_exec(sid, ["rm", "-f", "/tmp/freeze"])
        t1 = time.monotonic()
        image = cli_json(dc, "server", "image", "create", "--wait", "--name", "t-rbd-bfv-img", sid)
        snap_s = time.monotonic() - t1
        assert image["size"] == 0 and image["status"] == "active"
        mapping = json.loads(image["properties"]["block_device_mapping"])
        assert [(m["source_type"], m["boot_index"], m["volume_type"]) for m in mapping] == [("snapshot", 0, "ceph")]
        snaps = [m["snapshot_id"] for m in mapping]
        wait_for("the snapshot available", lambda: cli_json(dc, "volume", "snapshot", "show", snaps[0])["status"]
                 == "available", 120)
        events = action_events(dc, sid, "createImage")["events"]
        assert [(e["event"], e["result"]) for e in events] == [("api_snapshot_instance", "Success")]
        # The guest's fsfreeze hook ran for the freeze and the thaw around the snapshot.
        assert hv.guest_exec(sid, ["cat", "/tmp/freeze"])[1] == b"I'm frozen\nI'm thawed\n"
        # The Cinder snapshot is an RBD snapshot of the volume's image, with the marker in it.
        rbd, ioctx = pool
        with rbd.Image(ioctx, f"volume-{vid}", read_only=True) as img:
            names = [s["name"] for s in img.list_snaps()]
        assert names == [f"snapshot-{snaps[0]}"], names
        assert _allocated_contains(pool, f"volume-{vid}", f"snapshot-{snaps[0]}", marker * 4)
        print(f"\nboot from a ceph volume to the agent answering: {boot_s:.1f} s; quiesced createImage {snap_s:.1f} s")
    finally:
        if image:
            dc.openstack("image", "delete", image["id"], check=False)
        for snap_id in snaps:
            dc.openstack("volume", "snapshot", "delete", snap_id, check=False)
        for snap_id in snaps:
            wait_for("the snapshot deleted", lambda sid_=snap_id: dc.openstack(
                "volume", "snapshot", "show", sid_, check=False).returncode != 0, 120)
        delete_server(dc, sid)
        dc.openstack("volume", "delete", vid, check=False)
