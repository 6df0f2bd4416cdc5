"""`backup --volume` of Cinder volumes on Ceph RBD: read straight from Ceph, Incrementals of what changed.

Real parts: Cinder's own RBD driver (volume type `ceph`) on the dev cloud's single-node Ceph, librbd.
A guest's writes go into the volume's RBD image through librbd as client.admin (quicker than a
guest, which tests/devcloud/test_nova_rbd.py boots); stackvault reads as the read-only `client.stackvault`.

What a user checks: the Incremental reads about the changed blocks, not the volume, and says
`changed_blocks`; one Cinder snapshot per volume stays as the next backup's base (the one before is
deleted), `cleanup` leaves it and `cleanup --bases` releases it; every backup restores the volume's
bytes at its snapshot; a base snapshot deleted by hand, released for want of snapshot quota, or
released by `cleanup --bases` makes a correct full read that says why; a volume that is not on RBD,
backed up in the same run, takes the temporary-volume path as before.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from pathlib import Path

import pytest
from e2e.helpers import Stackvault, one_error, sha256_file

from devcloud import ceph

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 64 * KiB


class Volumes:
    """The volumes and Cinder snapshots a test makes, as admin; all deleted after it."""

    def __init__(self, conn):
        self.conn = conn
        self.made: list[str] = []

    def create(self, name: str, **extra) -> object:
        vol = self.conn.block_storage.create_volume(size=1, name=name, **extra)
        self.made.append(vol.id)
        return self.conn.block_storage.wait_for_status(vol, "available", failures=["error"], wait=120)

    def bases(self, volume_id: str) -> list[str]:
        return [s.id for s in self.conn.block_storage.snapshots(details=True, volume_id=volume_id)
                if "stackvault_base" in (s.metadata or {})]

    def quota(self, **limits: int) -> None:
        self.conn.block_storage.update_quota_set(self.conn.current_project_id, **limits)

    def snapshots(self, volume_id: str) -> list[str]:
        return [s.id for s in self.conn.block_storage.snapshots(details=True, volume_id=volume_id)]

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.conn.block_storage.delete_snapshot(snapshot_id)
        self.conn.block_storage.wait_for_delete(self.conn.block_storage.get_snapshot(snapshot_id), wait=120)

    def cleanup(self) -> None:
        for volume_id in self.made:
            for snap in self.snapshots(volume_id):
                self.delete_snapshot(snap)
            self.conn.block_storage.delete_volume(volume_id, ignore_missing=True)


class Guest:
    """What a guest writes into its RBD volume, through librbd as client.admin."""

    def __init__(self, state: Path, image: str):
        _, self.rbd = ceph.import_bindings(state)
        self.cluster = ceph.connect(state, "admin")
        self.ioctx = self.cluster.open_ioctx(ceph.POOL)
        self.image = image
        self.rng = random.Random(20261207)

    def close(self) -> None:
        self.ioctx.close()
        self.cluster.shutdown()

    def write(self, offset: int, length: int) -> None:
        with self.rbd.Image(self.ioctx, self.image) as img:
            img.write(self.rng.randbytes(length), offset)
            img.flush()

    def sha256(self, snapshot: str) -> str:
        """The whole volume at an RBD snapshot, hashed (what a restore must give back)."""
        digest = hashlib.sha256()
        with self.rbd.Image(self.ioctx, self.image, snapshot=snapshot, read_only=True) as img:
            for offset in range(0, img.size(), 16 * MiB):
                digest.update(img.read(offset, min(16 * MiB, img.size() - offset)))
        return digest.hexdigest()

    def snapshots(self) -> list[str]:
        with self.rbd.Image(self.ioctx, self.image, read_only=True) as img:
            return [snap["name"] for snap in img.list_snaps()]




@pytest.fixture
def setup(devcloud_ceph, tmp_path: Path):
    dc = devcloud_ceph
    conn = dc.connect()
    conn.block_storage.update_quota_set(conn.current_project_id, volumes=50, snapshots=50, gigabytes=200)
    state = dc.state_dir
    has_nova = "nova" not in dc.skip
    status = dc.status()
    transfer = "attach" if has_nova else "image"  # a cloud without Nova cannot attach to a proxy server
    cloud = ['[cloud]', 'os_cloud = "devcloud"', "timeout = 300", f'volume_transfer = "{transfer}"']
    if has_nova:
        cloud += [f'proxy_server = "{status["proxy_server_id"]}"', f'device_root = "{status["proxy_device_root"]}"']
    config = tmp_path / "sv.toml"
    config.write_text("\n".join(cloud) + "\n\n[ceph]\n"
                      f'conf = "{ceph.conf_path(state)}"\nclient = "client.{ceph.PROXY_USER}"\n'
                      f'keyring = "{ceph.keyring_path(state, ceph.PROXY_USER)}"\n'
                      'volume_backends = { ceph = "volumes" }\n')

    class User(Stackvault):
        def env(self) -> dict[str, str]:
            return {**super().env(), "OS_CLIENT_CONFIG_FILE": str(dc.clouds_yaml), "STACKVAULT_CONFIG": str(config)}

    sv = User(tmp_path / "sv")
    sv.init("64KiB")
    volumes = Volumes(conn)
    try:
        yield sv, volumes, state, transfer
    finally:
        volumes.cleanup()


def test_volumes_on_rbd_back_up_changed_blocks_keep_one_base_and_restore_exactly(setup, tmp_path: Path) -> None:
    sv, volumes, state, transfer = setup
    tag = uuid.uuid4().hex[:6]
    vol = volumes.create(f"rbd-{tag}", volume_type="ceph")
    plain = volumes.create(f"plain-{tag}")
    guest = Guest(state, f"volume-{vol.id}")
    started = time.monotonic()
    try:
        def backup(*args: str) -> dict:
            report = sv.run("backup", *args, timeout=600).data
            assert report["status"] == "success", report
            return {item["volume_id"]: item for item in report["volumes"]}

        def restores_as(item: dict, expected: str) -> None:
            out = sv.restore(item["backup_id"], tmp_path / f"{item['backup_id']}.raw")
            assert sha256_file(out) == expected, f"backup {item['backup_id']} restored other bytes: {item}"
            out.unlink()

        # A volume in use: 16 MiB written, scattered writes below 64 MiB.
        for offset in range(0, 16 * MiB, 4 * MiB):
            guest.write(offset, 4 * MiB)
        for _ in range(8):
            guest.write(guest.rng.randrange(0, 64 * MiB // 4096 - 64) * 4096, 256 * KiB)

        t0 = time.monotonic()
        full = backup("--volume", vol.id, "--level", "full")[vol.id]
        full_s = time.monotonic() - t0
        [disk] = full["disks"]
        assert disk["disk_key"] == f"volume:{vol.id}" and disk["level"] == "full", full
        read = disk["read"]
        assert read["path"] == "full_read" and read["why"] == "a Full reads every block", full
        assert read["rbd"] == f"volumes/volume-{vol.id}@snapshot-{full['base_snapshot']}", full
        assert read["backend"].startswith("ceph (os-vol-host-attr:host "), full
        # librbd lists a new object from its start to the highest byte written: at most 8 more objects.
        assert disk["bytes_read"] <= 48 * MiB, f"only what is allocated is read, not 1 GiB: {full}"
        assert volumes.bases(vol.id) == [full["base_snapshot"]], "the snapshot read is kept as the next base"
        at_full = guest.sha256(f"snapshot-{full['base_snapshot']}")

        # A few changed blocks; the plain volume goes in the same run.
        for offset in (3 * MiB, 40 * MiB + 8 * KiB, 700 * MiB):
            guest.write(offset, 64 * KiB)
        t0 = time.monotonic()
        both = backup("--volume", vol.id, "--volume", plain.id)
        inc_s = time.monotonic() - t0
        inc = both[vol.id]
        [disk] = inc["disks"]
        read = disk["read"]
        assert disk["level"] == "incremental" and read["path"] == "changed_blocks", inc
        assert read["base_snapshot"] == f"snapshot-{full['base_snapshot']}", inc
        assert read["sample_mismatches"] == 0, inc
        assert disk["blocks_changed"] == 4, inc  # the write at 40 MiB + 8 KiB spans two blocks
        assert disk["bytes_read"] <= (read["blocks_listed"] + read["sample_blocks"]) * BLOCK, inc
        # What librbd listed (a few blocks) and the sample of the unchanged ones (a share of the data).
        assert disk["bytes_read"] < 8 * MiB and disk["bytes_read"] < full["bytes_read"] / 2, \
            f"an Incremental reads what changed, not the volume: {inc}"
        assert inc["released_bases"] == [full["base_snapshot"]], inc
        assert volumes.bases(vol.id) == [inc["base_snapshot"]], "exactly one base per volume"
        at_inc = guest.sha256(f"snapshot-{inc['base_snapshot']}")

        [pdisk] = both[plain.id]["disks"]
        assert pdisk["read"]["path"] == transfer, both[plain.id]
        assert "not one of the RBD backends" in pdisk["read"]["why"], both[plain.id]
        assert "base_snapshot" not in both[plain.id] and volumes.snapshots(plain.id) == [], both[plain.id]

        # `cleanup` keeps the base, lists it; `doctor` counts it.
        cleaned = sv.run("cleanup").data
        assert cleaned["snapshots"] == [] and cleaned["failed"] == [], cleaned
        assert [b["id"] for b in cleaned["bases"]] == [inc["base_snapshot"]], cleaned
        assert volumes.bases(vol.id) == [inc["base_snapshot"]]
        assert "kept 1 base snapshots of the next backups" in sv.run("cleanup", json_out=False).stdout
        if transfer == "attach":  # `doctor` looks at servers: only a cloud with Nova has them
            counted = sv.run("doctor", "--all", expect=None).data["retained_bases"]
            assert counted["count"] == 1 and counted["snapshots"][0]["id"] == inc["base_snapshot"], counted

        restores_as(full, at_full)
        restores_as(inc, at_inc)

        # The base deleted by hand: a correct full read that says why; the next one is fast again.
        volumes.delete_snapshot(inc["base_snapshot"])
        guest.write(5 * MiB, 64 * KiB)
        gone = backup("--volume", vol.id)[vol.id]
        [disk] = gone["disks"]
        assert disk["level"] == "incremental", gone
        assert disk["read"]["path"] == "full_read", gone
        assert disk["read"]["why"] == f"base snapshot snapshot-{inc['base_snapshot']} no longer exists", gone
        assert disk["bytes_read"] >= 16 * MiB, gone
        restores_as(gone, guest.sha256(f"snapshot-{gone['base_snapshot']}"))
        guest.write(6 * MiB, 64 * KiB)
        again = backup("--volume", vol.id)[vol.id]
        assert again["disks"][0]["read"]["path"] == "changed_blocks", again
        assert volumes.bases(vol.id) == [again["base_snapshot"]]
        restores_as(again, guest.sha256(f"snapshot-{again['base_snapshot']}"))

        # Cinder's snapshot quota full (every snapshot a base): the base is released to make room, the
        # backup reads in full and says why, where it would fail for want of a snapshot.
        limits = volumes.conn.block_storage.get_limits().absolute
        volumes.quota(snapshots=limits.total_snapshots_used)
        guest.write(8 * MiB, 64 * KiB)
        try:
            report = sv.run("backup", "--volume", vol.id, timeout=600).data
        finally:
            volumes.quota(snapshots=50)
        [full_quota] = report["volumes"]
        assert report["status"] == "warning" and full_quota["status"] == "warning", report
        assert any("snapshot quota was full" in w and again["base_snapshot"] in w for w in full_quota["warnings"]), \
            full_quota
        assert full_quota["disks"][0]["read"]["path"] == "full_read", full_quota
        assert volumes.bases(vol.id) == [full_quota["base_snapshot"]], full_quota
        restores_as(full_quota, guest.sha256(f"snapshot-{full_quota['base_snapshot']}"))

        # The volume is no longer backed up: its base is released on request; a dry run names it first.
        dry = sv.run("cleanup", "--bases", "--volume", vol.id, "--dry-run").data
        assert dry["dry_run"] and [b["id"] for b in dry["bases_released"]] == [full_quota["base_snapshot"]], dry
        assert volumes.bases(vol.id) == [full_quota["base_snapshot"]], "a dry run deletes nothing"
        # A volume no base belongs to (a typo, or one never read from Ceph) is said, and nothing released.
        res = sv.run("cleanup", "--bases", "--volume", f"plain-{tag}", expect=None)
        one_error(res, "no retained base snapshot", f"plain-{tag}", rc=2)
        assert volumes.bases(vol.id) == [full_quota["base_snapshot"]]
        released = sv.run("cleanup", "--bases", "--volume", vol.id).data
        assert [b["id"] for b in released["bases_released"]] == [full_quota["base_snapshot"]], released
        assert volumes.snapshots(vol.id) == []

        # Backed up again after all: a full read that says why, exact, and a new base.
        guest.write(9 * MiB, 64 * KiB)
        after = backup("--volume", vol.id)[vol.id]
        read = after["disks"][0]["read"]
        assert read["path"] == "full_read", after
        assert read["why"] == f"base snapshot snapshot-{full_quota['base_snapshot']} no longer exists", after
        assert read["rbd"] == f"volumes/volume-{vol.id}@snapshot-{after['base_snapshot']}", after
        restores_as(after, guest.sha256(f"snapshot-{after['base_snapshot']}"))
        assert volumes.bases(vol.id) == [after["base_snapshot"]]
        print(f"\nrbd volume backups: {time.monotonic() - started:.1f} s; Full read {full['bytes_read'] / MiB:.2f} MiB "
              f"in {full_s:.1f} s, Incremental {inc['disks'][0]['bytes_read'] / MiB:.2f} MiB in {inc_s:.1f} s (with "
              f"the plain volume, {both[plain.id]['disks'][0]['bytes_read'] / MiB:.2f} MiB through {transfer}); "
              f"after a deleted base {gone['bytes_read'] / MiB:.2f} MiB")
    finally:
        guest.close()

