"""`backup --server` of an image-backed server with a data volume on Ceph RBD.

Nova snapshots only such a server's root disk; the job snapshots the attached volume itself (crash
consistent), and that snapshot is read straight from RBD and kept as the volume's next base, as for a
volume-backed server or `backup --volume`. What a user checks: the volume's disk says it was read from
RBD, the Incremental reads only what changed in it and releases the earlier base, both backups restore
the volume's bytes at their snapshots, nothing else is left in the cloud; and with Cinder's snapshot
quota full, the server's backup releases the volume's base to make room (a warning, a full read of the
volume) instead of failing.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from e2e.helpers import sha256_file

from devcloud.nova.testing import wait_for

from .test_rbd_server_backup import BLOCK, KiB, MiB, setup  # noqa: F401 - `setup` is this file's fixture too
from .test_rbd_volume_backup import Guest

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]


def test_an_image_backed_servers_rbd_volume_takes_the_changed_block_path(setup, tmp_path: Path) -> None:  # noqa: F811
    dc, conn, sv, made = setup
    name = f"rbd-img-{uuid.uuid4().hex[:6]}"
    image = conn.image.find_image("sv-agent-quiesce", ignore_missing=False)
    server = conn.compute.wait_for_server(conn.compute.create_server(
        name=name, image_id=image.id, flavor_id=conn.compute.find_flavor("m1.tiny").id,
        networks=[{"uuid": conn.network.find_network("private").id}]), wait=300)
    vol = conn.block_storage.create_volume(size=1, name=f"{name}-data", volume_type="ceph")
    made.append((server.id, vol.id))
    conn.block_storage.wait_for_status(vol, "available", wait=120)
    conn.compute.create_volume_attachment(server, volume=vol.id)
    conn.block_storage.wait_for_status(vol, "in-use", wait=120)
    guest = Guest(dc.state_dir, f"volume-{vol.id}")

    def backup(*args: str) -> dict:
        report = sv.run("backup", "--server", name, *args, timeout=600).data
        [item] = report["servers"]
        assert item["status"] in ("success", "warning"), report
        return item

    def data_disk(item: dict) -> dict:
        [disk] = [d for d in item["disks"] if d["disk_key"] == f"volume:{vol.id}"]
        return disk

    def bases() -> list[str]:
        return [s.id for s in conn.block_storage.snapshots(details=True, volume_id=vol.id)
                if "stackvault_base" in (s.metadata or {})]

    def restores_as(item: dict, expected: str) -> None:
        out = tmp_path / f"{item['backup_id']}.raw"
        sv.restore(item["backup_id"], out, extra=["--disk", data_disk(item)["name"]])
        assert sha256_file(out) == expected, f"backup {item['backup_id']} restored other bytes: {item}"
        out.unlink()

    try:
        guest.write(100 * MiB, 4 * MiB)
        full = backup("--level", "full")
        assert full["status"] == "success", full
        disk = data_disk(full)
        base = full["base_snapshots"][vol.id]
        assert disk["read"]["rbd"] == f"volumes/volume-{vol.id}@snapshot-{base}", full
        snapshot = conn.block_storage.get_snapshot(base)
        assert snapshot.name.startswith(f"stackvault-{name}-"), "the base is the snapshot the job made"
        assert bases() == [base] and guest.snapshots() == [f"snapshot-{base}"]
        leftovers = sv.run("cleanup", "--dry-run").data
        assert (leftovers["images"], leftovers["snapshots"], leftovers["volumes"]) == ([], [], []), leftovers
        at_full = guest.sha256(f"snapshot-{base}")

        for offset in (1 * MiB, 300 * MiB, 900 * MiB):
            guest.write(offset, 64 * KiB)
        inc = backup()
        assert inc["status"] == "success", inc
        disk = data_disk(inc)
        read = disk["read"]
        assert disk["level"] == "incremental" and read["path"] == "changed_blocks", inc
        assert read["base_snapshot"] == f"snapshot-{base}" and read["sample_mismatches"] == 0, inc
        assert disk["blocks_changed"] == 3, inc
        assert disk["bytes_read"] <= (read["blocks_listed"] + read["sample_blocks"]) * BLOCK, inc
        new_base = inc["base_snapshots"][vol.id]
        assert inc["released_bases"] == [base], inc
        assert bases() == [new_base] and guest.snapshots() == [f"snapshot-{new_base}"]
        at_inc = guest.sha256(f"snapshot-{new_base}")
        restores_as(full, at_full)
        restores_as(inc, at_inc)

        # Cinder's snapshot quota full: every snapshot the project may have is taken, the base among them.
        used = len(list(conn.block_storage.snapshots(details=True)))
        conn.block_storage.update_quota_set(conn.current_project_id, snapshots=used)
        try:
            guest.write(2 * MiB, 64 * KiB)
            crowded = backup()
        finally:
            conn.block_storage.update_quota_set(conn.current_project_id, snapshots=50)
        assert crowded["status"] == "warning", crowded
        assert any("snapshot quota was full" in w and new_base in w for w in crowded["warnings"]), crowded
        disk = data_disk(crowded)
        assert disk["read"].get("path") == "full_read" and "no longer exists" in disk["read"]["why"], crowded
        assert bases() == [crowded["base_snapshots"][vol.id]], "the backup's own snapshot is the next base"
        restores_as(crowded, guest.sha256(f"snapshot-{crowded['base_snapshots'][vol.id]}"))
        sv.run("cleanup", "--bases", "--volume", vol.id)
        wait_for("the base deleted", lambda: guest.snapshots() == [], 60)
    finally:
        guest.close()
