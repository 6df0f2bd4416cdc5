"""A server booted from an existing bootable Cinder volume (`source_type=volume`), as `make demo`
boots its server on Ceph: Cinder keeps the volume's image metadata as strings, which Nova must read
(min_disk against the flavor's disk) as numbers. Fast mode only: a real guest is the demo's (guest tier)."""

from __future__ import annotations

import pytest

from devcloud.nova.testing import IMAGE_AGENT

pytestmark = [pytest.mark.devcloud]


def test_boot_from_an_existing_bootable_volume(devcloud):
    if not devcloud.ctx.fast:
        pytest.skip("boots a real guest on a cloud with VMs: the guest tier's demo does that")
    conn = devcloud.connect()
    image = conn.image.find_image(IMAGE_AGENT)
    vol = conn.block_storage.create_volume(size=1, name="t-bfv-root", image_id=image.id)
    conn.block_storage.wait_for_status(vol, "available", failures=["error"], wait=300)
    server = conn.compute.create_server(
        name="t-bfv", flavor_id=conn.compute.find_flavor("m1.tiny").id,
        networks=[{"uuid": conn.network.find_network("private").id}],
        block_device_mapping_v2=[{"boot_index": 0, "uuid": vol.id, "source_type": "volume",
                                  "destination_type": "volume", "delete_on_termination": True}])
    try:
        server = conn.compute.wait_for_server(server, wait=300)
        assert server.status == "ACTIVE"
        assert [a["id"] for a in server.attached_volumes] == [vol.id]
        assert conn.block_storage.get_volume(vol.id).volume_image_metadata["min_disk"] == "0"
    finally:
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=300)
        conn.block_storage.wait_for_delete(vol, wait=300)
