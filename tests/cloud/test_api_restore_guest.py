"""A project member's restore through `stackvault api`, on real QEMU guests: the restored server in the
member's project boots, and its guest reads back, through its agent, the file the original guest wrote
before the backup (as `make demo` checks its restores)."""

from __future__ import annotations

import hashlib
import os

import pytest

from .test_api_keystone import Api
from .test_api_keystone import api as api  # a fixture, used by its name
from .test_api_restores import _follow
from .test_quiesce_proof import _hypervisor

pytestmark = [pytest.mark.devcloud, pytest.mark.guest, pytest.mark.slow]


def test_a_members_restore_boots_and_reads_back_what_its_guest_wrote(api: Api, devcloud):
    if devcloud.ctx.fast:
        pytest.skip("needs real guests: run without DEVCLOUD_FAST")
    admin = devcloud.connect()
    hv = _hypervisor(devcloud)
    original = api.a.server_id
    hv.wait_agent(original, timeout=300)
    data = os.urandom(256 * 1024)
    hv.guest_write_file(original, "/root/precious.bin", data)
    code, _, err = hv.guest_exec(original, ["/bin/sync"])
    assert code == 0, err
    backup = api.cli.run("backup", "--server", original, "--project", api.a.id, timeout=900).data
    [item] = backup["servers"]
    assert item["status"] == "success", item

    name = f"sv-guest-restored-{api.a.id[:6]}"
    started = api.post("/v1/restores", api.a.tokens["member"], backup_id=item["backup_id"], name=name)
    assert started.status_code == 202, started.text
    done = _follow(api, started.json()["restore"]["id"], api.a.tokens["member"], deadline_s=900)
    try:
        assert done["status"] == "active", done
        restored = admin.compute.get_server(done["server_id"])
        assert restored.project_id == api.a.id and restored.id != original
        hv.wait_agent(restored.id, timeout=300)
        got = hv.guest_read_file(restored.id, "/root/precious.bin")
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        restored_server = admin.compute.find_server(done.get("server_id") or "", ignore_missing=True)
        if restored_server is not None:
            admin.compute.delete_server(restored_server)
            admin.compute.wait_for_delete(restored_server, wait=120)
        for image in admin.image.images(owner=api.a.id):
            if image.name.startswith(name):
                admin.image.delete_image(image, ignore_missing=True)
