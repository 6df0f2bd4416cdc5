"""`backup --server` of a server booted from a Cinder volume on Ceph RBD: Nova's quiesced snapshots, diffed in Ceph.

Real parts: the emulated Nova's createImage on a volume-backed server (quiesce through the guest agent, a
Cinder snapshot of the volume), Cinder's own RBD driver (volume type `ceph`), the dev cloud's single-node Ceph,
librbd. What the guest writes goes into the boot volume's RBD image through librbd as client.admin (quicker
than from a guest; tests/devcloud/test_nova_rbd.py writes from a real one); stackvault reads as the read-only
`client.stackvault`.

What a user checks: the server's disk is read from the RBD snapshot Nova made, quiesced (`application`); that
snapshot stays as the next backup's base and the rest of Nova's snapshot (its image) is gone; the Incremental
reads only the changed blocks and releases the earlier base; every backup restores the disk's bytes at its
snapshot; nothing is left for `cleanup` but the one base, which `cleanup --bases` releases.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from e2e.helpers import Stackvault, sha256_file

from devcloud import ceph
from devcloud.nova.testing import cli_json, wait_for

from .test_rbd_volume_backup import Guest

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]

KiB, MiB = 1 << 10, 1 << 20
BLOCK = 64 * KiB




@pytest.fixture
def setup(devcloud_ceph, tmp_path: Path):
    dc = devcloud_ceph
    if "nova" in dc.skip:
        pytest.skip("needs Nova in the cloud with Ceph")
    conn = dc.connect()
    conn.block_storage.update_quota_set(conn.current_project_id, volumes=50, snapshots=50, gigabytes=200)
    state = dc.state_dir
    status = dc.status()
    config = tmp_path / "sv.toml"
    config.write_text(
        f'[cloud]\nos_cloud = "devcloud"\ntimeout = 300\nproxy_server = "{status["proxy_server_id"]}"\n'
        f'device_root = "{status["proxy_device_root"]}"\n\n[ceph]\n'
        f'conf = "{ceph.conf_path(state)}"\nclient = "client.{ceph.PROXY_USER}"\n'
        f'keyring = "{ceph.keyring_path(state, ceph.PROXY_USER)}"\nvolume_backends = {{ ceph = "volumes" }}\n')

    class User(Stackvault):
        def env(self) -> dict[str, str]:
            return {**super().env(), "OS_CLIENT_CONFIG_FILE": str(dc.clouds_yaml), "STACKVAULT_CONFIG": str(config)}

    sv = User(tmp_path / "sv")
    sv.init("64KiB")
    made: list[tuple[str, str]] = []  # (server id, boot volume id)
    try:
        yield dc, conn, sv, made
    finally:
        for server_id, volume_id in made:
            sv.run("cleanup", "--bases", "--volume", volume_id, expect=None)
            dc.openstack("server", "delete", "--wait", server_id, check=False)
            for snap in conn.block_storage.snapshots(details=True, volume_id=volume_id):
                conn.block_storage.delete_snapshot(snap, ignore_missing=True)
                conn.block_storage.wait_for_delete(snap, wait=120)
            conn.block_storage.delete_volume(volume_id, ignore_missing=True)


def test_volume_backed_server_on_rbd_backs_up_changed_blocks_from_novas_snapshots(setup, tmp_path: Path) -> None:
    dc, conn, sv, made = setup
    name = f"rbd-srv-{uuid.uuid4().hex[:6]}"
    image_id = cli_json(dc, "image", "show", "sv-agent-quiesce")["id"]
    server = cli_json(dc, "--os-compute-api-version", "2.67", "server", "create", "--flavor", "m1.tiny",
                      "--network", "private", "--wait", "--block-device",
                      f"source_type=image,uuid={image_id},destination_type=volume,volume_size=1,"
                      "volume_type=ceph,boot_index=0,delete_on_termination=true", name)
    vid = server["volumes_attached"][0]["id"]
    made.append((server["id"], vid))
    if not dc.ctx.fast:  # a real guest: Nova's quiesce needs its agent, which answers once it has booted
        from devcloud.guest.hypervisor import Hypervisor
        Hypervisor(dc.state_dir / "nova" / "guests").wait_agent(server["id"], timeout=240)
    guest = Guest(dc.state_dir, f"volume-{vid}")
    started = time.monotonic()

    def backup(*args: str) -> dict:
        report = sv.run("backup", "--server", name, *args, timeout=600).data
        [item] = report["servers"]
        assert item["status"] == "success", report
        return item

    def bases() -> list[str]:
        return [s.id for s in conn.block_storage.snapshots(details=True, volume_id=vid)
                if "stackvault_base" in (s.metadata or {})]

    def restores_as(item: dict, expected: str) -> None:
        out = sv.restore(item["backup_id"], tmp_path / f"{item['backup_id']}.raw")
        assert sha256_file(out) == expected, f"backup {item['backup_id']} restored other bytes: {item}"
        out.unlink()

    try:
        # The guest's data: 8 MiB in one piece, and scattered writes.
        guest.write(200 * MiB, 8 * MiB)
        for _ in range(6):
            guest.write(guest.rng.randrange(64 * MiB // 4096, 512 * MiB // 4096) * 4096, 128 * KiB)

        t0 = time.monotonic()
        full = backup("--level", "full")
        full_s = time.monotonic() - t0
        assert full["consistency"] == "application", full  # Nova quiesced before its snapshot
        [disk] = full["disks"]
        assert disk["name"] == "vda" and disk["level"] == "full", full
        base = full["base_snapshots"][vid]
        assert disk["read"]["rbd"] == f"volumes/volume-{vid}@snapshot-{base}", full
        assert disk["read"]["backend"].startswith("ceph (os-vol-host-attr:host "), full
        snapshot = conn.block_storage.get_snapshot(base)
        assert snapshot.name.startswith(f"snapshot for stackvault-{name}-"), "the base is the snapshot Nova made"
        assert bases() == [base] and guest.snapshots() == [f"snapshot-{base}"]
        leftovers = sv.run("cleanup", "--dry-run").data
        assert (leftovers["images"], leftovers["snapshots"], leftovers["volumes"]) == ([], [], []), \
            "Nova's image is deleted, its snapshot kept as the base only"
        at_full = guest.sha256(f"snapshot-{base}")

        for offset in (1 * MiB, 300 * MiB, 900 * MiB):
            guest.write(offset, 64 * KiB)
        t0 = time.monotonic()
        inc = backup()
        inc_s = time.monotonic() - t0
        [disk] = inc["disks"]
        read = disk["read"]
        assert disk["level"] == "incremental" and read["path"] == "changed_blocks", inc
        assert read["base_snapshot"] == f"snapshot-{base}" and read["sample_mismatches"] == 0, inc
        # What the guest wrote, plus whatever its boot and the agent's freeze touched in the file system.
        assert 3 <= disk["blocks_changed"] <= 64, inc
        assert disk["bytes_read"] <= (read["blocks_listed"] + read["sample_blocks"]) * BLOCK, inc
        assert disk["bytes_read"] < 8 * MiB and disk["bytes_read"] < full["disks"][0]["bytes_read"] / 2, \
            f"an Incremental reads what changed, not the disk: {inc}"
        new_base = inc["base_snapshots"][vid]
        assert inc["released_bases"] == [base], inc
        assert bases() == [new_base] and guest.snapshots() == [f"snapshot-{new_base}"]
        at_inc = guest.sha256(f"snapshot-{new_base}")

        restores_as(full, at_full)
        restores_as(inc, at_inc)

        released = sv.run("cleanup", "--bases", "--volume", vid).data
        assert [b["id"] for b in released["bases_released"]] == [new_base], released
        wait_for("the base deleted", lambda: guest.snapshots() == [], 60)
        print(f"\nrbd server backups: {time.monotonic() - started:.1f} s; Full read "
              f"{full['disks'][0]['bytes_read'] / MiB:.2f} MiB in {full_s:.1f} s, Incremental "
              f"{inc['disks'][0]['bytes_read'] / MiB:.2f} MiB ({inc['disks'][0]['blocks_changed']} blocks) "
              f"in {inc_s:.1f} s")
    finally:
        guest.close()
