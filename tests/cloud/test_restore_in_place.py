"""`restore BACKUP --to server:NAME --in-place`: the backup's root disk put back into the existing
server through Nova's rebuild.

What a user checks: the server is the same one (id, ports and addresses, attached volume), its root
disk holds the backed-up bytes again, the attached volume is as it was; and a restore that cannot be
done in place is refused in one line before anything is made in the cloud.
"""

from __future__ import annotations

import uuid

import pytest

from .conftest import qemu_io_write, raw_copy, same_disk
from .test_server_backup import _boot, _disks

pytestmark = pytest.mark.devcloud
MiB = 1 << 20


def _ports(conn, server) -> set[tuple[str, str]]:
    return {(p.id, p.fixed_ips[0]["ip_address"]) for p in conn.network.ports(device_id=server.id)}


def _images_named(conn, prefix: str) -> list[str]:
    return [i.name for i in conn.image.images() if i.name.startswith(prefix)]


def test_in_place_restore_keeps_the_server_and_puts_its_disk_back(user, fast_cloud, devcloud, conn,
                                                                  cloud_objects, tmp_path):
    name = f"inpl-{uuid.uuid4().hex[:6]}"
    server = _boot(conn, cloud_objects, name, "sv-agent", data_gb=1)
    disks = _disks(devcloud, conn, server)
    qemu_io_write(*disks["vda"], offset=300 * MiB, pattern=0x11)
    qemu_io_write(*disks["vdb"], offset=5 * MiB, pattern=0x5A, length=MiB)
    backed_up = raw_copy(*disks["vda"], tmp_path / "vda-backed-up.raw")
    [item] = user.run("backup", "--server", name, "--level", "full").data["servers"]
    assert item["status"] == "success", item
    ports = _ports(conn, server)
    attached = [a.volume_id for a in conn.compute.volume_attachments(server)]

    # The user's damage after the backup: the root disk and the data volume both change.
    qemu_io_write(*disks["vda"], offset=300 * MiB, pattern=0xEE)
    qemu_io_write(*disks["vdb"], offset=5 * MiB, pattern=0x33, length=MiB)
    volume_now = raw_copy(*disks["vdb"], tmp_path / "vdb-now.raw")

    out = user.run("restore", item["backup_id"], "--to", f"server:{name}", "--in-place").data
    assert out["id"] == server.id and out["in_place"] is True, out
    assert out["kept_volumes"] == attached, out
    after = conn.compute.get_server(server.id)
    assert after.status == "ACTIVE" and after.metadata.get("stackvault_backup") == item["backup_id"]
    assert _ports(conn, after) == ports
    assert [a.volume_id for a in conn.compute.volume_attachments(after)] == attached
    actions = [a.action for a in conn.compute.server_actions(after)]
    assert "rebuild" in actions, actions

    restored = _disks(devcloud, conn, after)
    assert same_disk(raw_copy(*restored["vda"], tmp_path / "vda-restored.raw"), backed_up), \
        "the rebuilt root disk differs from the backed-up one"
    assert same_disk(raw_copy(*restored["vdb"], tmp_path / "vdb-after.raw"), volume_now), \
        "an in-place restore must not rewrite an attached volume"
    assert _images_named(conn, f"{name}-") == [f"{name}-{item['backup_id']}"]


@pytest.mark.slow  # three servers and their backup
def test_in_place_restore_refusals_make_nothing(user, fast_cloud, conn, cloud_objects):
    tag = uuid.uuid4().hex[:6]
    server = _boot(conn, cloud_objects, f"inplr-{tag}", "sv-agent")
    other = _boot(conn, cloud_objects, f"inplo-{tag}", "sv-agent")
    vol_backed = _boot(conn, cloud_objects, f"inplv-{tag}", "sv-agent-quiesce", volume_backed=True)
    report = user.run("backup", "--server", f"inpl?-{tag}", "--level", "full").data
    backup = {s["name"]: s["backup_id"] for s in report["servers"]}

    def refused(*args: str) -> str:
        res = user.run("restore", *args, json_out=False, expect=2)
        [line] = res.stderr.strip().splitlines()
        assert line.startswith("stackvault: error: "), res.describe()
        return line

    line = refused(backup[vol_backed.name], "--to", f"server:{vol_backed.name}", "--in-place")
    assert "boots from a volume" in line and "--to server:NEWNAME" in line
    line = refused(backup[server.name], "--to", f"server:{other.name}", "--in-place")
    assert f"not of {other.name}" in line and "--force" in line
    line = refused(backup[server.name], "--to", "server:no-such-server-" + tag, "--in-place")
    assert "does not exist" in line
    line = refused(backup[server.name], "--to", f"volume:{server.name}", "--in-place")
    assert "--to server:NAME" in line

    conn.compute.lock_server(server, locked_reason="owner's maintenance")
    line = refused(backup[server.name], "--to", f"server:{server.name}", "--in-place")
    assert "is locked (owner's maintenance)" in line and "openstack server unlock" in line
    conn.compute.unlock_server(server)

    for made in (server, other, vol_backed):
        assert _images_named(conn, f"{made.name}-") == []
        assert "rebuild" not in [a.action for a in conn.compute.server_actions(made)]
