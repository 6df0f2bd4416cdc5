"""A stand-alone Cinder volume: `backup --volume`, Incremental, restore to a file and to a new volume.

What a user checks: the bytes restored equal the volume's bytes at each backup, the Incremental
stores only the changed block, the backup is recorded crash-consistent (Cinder snapshots the volume
without a guest to freeze), the volume's availability zone lets a proxy list its share, and the job
leaves no snapshot or temporary volume behind.
"""

from __future__ import annotations

import uuid

import pytest

from .conftest import qemu_io_write, raw_copy, same_disk
from .test_server_backup import _leftovers

pytestmark = pytest.mark.devcloud
MiB = 1 << 20


@pytest.mark.slow  # a volume's Full, Incremental and three restores
def test_volume_full_incremental_and_restores(user, fast_cloud, devcloud, conn, tmp_path):
    name = f"vol-{uuid.uuid4().hex[:6]}"
    vol = conn.block_storage.create_volume(size=1, name=name)
    made = [vol.id]
    try:
        vol = conn.block_storage.wait_for_status(vol, "available", wait=120)
        path = devcloud.state_dir / "cinder" / "volumes" / f"volume-{vol.id}"
        qemu_io_write(path, "raw", offset=3 * MiB, pattern=0x42, length=MiB)
        v1 = raw_copy(path, "raw", tmp_path / "v1.raw")

        full = user.run("backup", "--volume", name, "--level", "full").data
        [item] = full["volumes"]
        assert item["volume_id"] == vol.id and item["status"] == "success" and item["consistency"] == "crash", item

        qemu_io_write(path, "raw", offset=900 * MiB, pattern=0x17)  # one 64 KiB block
        v2 = raw_copy(path, "raw", tmp_path / "v2.raw")
        [incr] = user.run("backup", "--volume", vol.id).data["volumes"]
        assert incr["level"] == "incremental" and incr["blocks_changed"] == 1, incr

        for backup_id, expected in ((item["backup_id"], v1), (incr["backup_id"], v2)):
            out = tmp_path / f"{backup_id}.raw"
            user.run("restore", backup_id, "--to", f"file:{out}")
            assert same_disk(out, expected), f"restore of {backup_id} differs from the volume"
        restored = user.run("restore", incr["backup_id"], "--to", f"volume:{name}-restored").data
        made.append(restored["id"])
        assert same_disk(devcloud.state_dir / "cinder" / "volumes" / f"volume-{restored['id']}", v2)

        zone = vol.availability_zone
        assert [b["name"] for b in user.run("list", "--availability-zone", zone).data["backups"]] == [name, name]
        assert user.run("list", "--availability-zone", f"not-{zone}").data["backups"] == []
        assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}
    finally:
        for volume_id in made:
            conn.block_storage.delete_volume(volume_id, ignore_missing=True)
