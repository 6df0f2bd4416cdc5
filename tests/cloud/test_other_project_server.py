"""A proxy that is admin in its own project backs up a volume-backed server of another project (what
every proxy of a real cloud does), and restores it.

Nova calls Cinder with the caller's context, so the Cinder snapshots its createImage makes belong to
the admin's project; the backup must read them and leave none behind in either project.
"""

from __future__ import annotations

import uuid

import pytest

from .test_server_backup import _leftovers

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]


def test_a_volume_backed_server_of_another_project_is_backed_up_and_restored(user, devcloud, conn, tmp_path):
    demo = devcloud.connect("devcloud-demo")
    name = f"other-{uuid.uuid4().hex[:6]}"
    image = demo.image.find_image("sv-agent-quiesce", ignore_missing=False)
    server = demo.compute.create_server(
        name=name, flavor_id=demo.compute.find_flavor("m1.tiny").id,
        networks=[{"uuid": demo.network.find_network("private").id}],
        block_device_mapping_v2=[{"boot_index": 0, "uuid": image.id, "source_type": "image",
                                  "destination_type": "volume", "volume_size": 1,
                                  "delete_on_termination": True}])
    restored = None
    try:
        server = demo.compute.wait_for_server(server, wait=300)
        report = user.run("backup", "--server", server.id, "--project", demo.current_project_id,
                          "--level", "full").data
        [item] = report["servers"]
        assert item["status"] == "success" and item["consistency"] == "application", item
        assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}
        assert not list(demo.block_storage.snapshots()), "a snapshot was left in the server's project"

        out = user.run("restore", item["backup_id"], "--to", f"server:{name}-r").data
        restored = conn.compute.get_server(out["id"])
        assert restored.status == "ACTIVE"
        assert [d["kind"] for d in out["disks"]] == ["volume"], out
    finally:
        if restored is not None:
            conn.compute.delete_server(restored, ignore_missing=True)
            conn.compute.wait_for_delete(restored, wait=120)
            for disk in out["disks"]:
                conn.block_storage.delete_volume(disk["id"], ignore_missing=True)
        demo.compute.delete_server(server, ignore_missing=True)
        demo.compute.wait_for_delete(server, wait=120)
