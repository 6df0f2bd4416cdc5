"""Restores through `stackvault api` against the dev cloud's real Keystone, Glance and Nova: a project
member's restore becomes an ACTIVE server in that member's project (and in no other), started with a
Keystone trust the test can see; another project's backup is the same 404 as an unknown one.
"""

from __future__ import annotations

import time

import pytest

# The module's fixture of test_api_keystone: two projects with users, servers and backups, and the API.
from .test_api_keystone import Api
from .test_api_keystone import api as api  # a fixture, used by its name

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]  # the fixture (~1 min) and one restore (~1 min)


def _follow(api: Api, restore_id: str, token: str, deadline_s: float = 600) -> dict:
    deadline = time.monotonic() + deadline_s
    while True:
        reply = api.get(f"/v1/restores/{restore_id}", token)
        assert reply.status_code == 200, reply.text
        restore = reply.json()["restore"]
        if restore["status"] in ("active", "failed", "cancelled"):
            return restore
        assert time.monotonic() < deadline, f"restore {restore_id} still {restore['status']} after {deadline_s} s"
        time.sleep(2)


def _servers_named(conn, name: str, project_id: str) -> list:
    return [s for s in conn.compute.servers(all_projects=True, project_id=project_id) if s.name == name]


def test_another_projects_backup_cannot_be_restored_and_is_not_told_apart(api: Api):
    theirs = api.post("/v1/restores", api.a.tokens["member"], backup_id=api.b.backup_id, name="sv-stolen")
    unknown = api.post("/v1/restores", api.a.tokens["member"], backup_id="29991231T235959999Z-ffffff",
                       name="sv-stolen")
    assert theirs.status_code == unknown.status_code == 404, theirs.text
    assert theirs.json()["error"]["message"] == unknown.json()["error"]["message"].replace(
        "29991231T235959999Z-ffffff", api.b.backup_id)
    reader = api.post("/v1/restores", api.a.tokens["reader"], backup_id=api.a.backup_id, name="sv-by-reader")
    assert reader.status_code == 403
    assert api.get("/v1/restores/no-such-restore", api.a.tokens["member"]).status_code == 404


def test_a_members_restore_becomes_an_active_server_in_their_project_only(api: Api, devcloud):
    admin = devcloud.connect()
    name = f"sv-restored-{api.a.id[:6]}"
    started = api.post("/v1/restores", api.a.tokens["member"], backup_id=api.a.backup_id, name=name)
    assert started.status_code == 202, started.text
    restore = started.json()["restore"]
    try:
        assert started.headers["Location"].endswith(f"/v1/restores/{restore['id']}")
        assert restore["project_id"] == api.a.id and restore["status"] == "restoring"
        # the other project does not see it, even by its id
        assert api.get(f"/v1/restores/{restore['id']}", api.b.tokens["member"]).status_code == 404
        done = _follow(api, restore["id"], api.a.tokens["reader"])
        assert done["status"] == "active", done
        assert done["server_status"] == "ACTIVE"
        assert done["bytes_written"] >= done["size"] > 0

        server = admin.compute.get_server(done["server_id"])
        assert server.project_id == api.a.id
        assert server.metadata["stackvault_backup"] == api.a.backup_id
        assert _servers_named(admin, name, api.b.id) == []
        listed = {s["id"] for s in api.get("/v1/servers", api.a.tokens["member"]).json()["servers"]}
        assert done["server_id"] in listed
        # the trust the restore ran with: the member's, to the service user, in project a
        service_user = admin.identity.find_user("stackvault", ignore_missing=False)
        trusts = [t for t in admin.identity.trusts() if t.project_id == api.a.id]
        assert trusts and {t.trustee_user_id for t in trusts} == {service_user.id}
        # the job history has it, for project a only
        job = api.get(f"/v1/jobs/{restore['id']}", api.a.tokens["reader"])
        assert job.status_code == 200 and job.json()["job"]["kind"] == "restore", job.text
        assert job.json()["job"]["status"] == "success"
        assert api.get(f"/v1/jobs/{restore['id']}", api.b.tokens["reader"]).status_code == 404
        # a finished restore cannot be cancelled
        assert api.post(f"/v1/jobs/{restore['id']}/cancel", api.a.tokens["member"]).status_code == 409
    finally:
        for server in _servers_named(admin, name, api.a.id):
            admin.compute.delete_server(server, ignore_missing=True)
            admin.compute.wait_for_delete(server, wait=120)
        for image in admin.image.images(owner=api.a.id):
            if image.name.startswith(name):
                admin.image.delete_image(image, ignore_missing=True)



def test_a_volume_backed_servers_disks_are_handed_over_to_the_members_project(api: Api, devcloud):
    """The boot volume is written through the proxy's server in the proxy's project, then moved to the
    member's project by a Cinder volume transfer that the member's trust accepts."""
    import openstack

    admin = devcloud.connect()
    member = openstack.connect(auth_url=api.auth_url, token=api.a.tokens["member"], auth_type="v3token",
                               project_id=api.a.id, load_yaml_config=False, load_envvars=False)
    image = member.image.find_image("sv-agent", ignore_missing=False)
    flavor = member.compute.find_flavor("m1.tiny", ignore_missing=False)
    network = member.network.find_network("private", ignore_missing=False)
    made: list = []
    name = f"sv-vol-restored-{api.a.id[:6]}"
    try:
        boot = member.block_storage.create_volume(size=1, image_id=image.id, name="sv-api-a-boot")
        made.append(boot)
        member.block_storage.wait_for_status(boot, "available", failures=["error"], wait=300)
        server = member.compute.create_server(
            name="sv-api-a-vol", flavor_id=flavor.id, networks=[{"uuid": network.id}],
            block_device_mapping_v2=[{"boot_index": 0, "uuid": boot.id, "source_type": "volume",
                                      "destination_type": "volume", "delete_on_termination": False}])
        made.insert(0, server)
        member.compute.wait_for_server(server, wait=300)

        assert api.post(f"/v1/servers/{server.id}/backups", api.a.tokens["member"], level="full").status_code == 202
        deadline = time.monotonic() + 300
        while True:
            listed = {s["id"]: s for s in api.get("/v1/servers", api.a.tokens["member"]).json()["servers"]}
            last = listed[server.id]["last_backup"]
            if last is not None:
                break
            assert time.monotonic() < deadline, "the volume-backed server's backup did not finish within 300 s"
            time.sleep(2)

        started = api.post("/v1/restores", api.a.tokens["member"], backup_id=last["backup_id"], name=name)
        assert started.status_code == 202, started.text
        done = _follow(api, started.json()["restore"]["id"], api.a.tokens["member"])
        assert done["status"] == "active", done
        restored = admin.compute.get_server(done["server_id"])
        made.insert(0, restored)
        assert restored.project_id == api.a.id
        volumes = [admin.block_storage.get_volume(a.volume_id) for a in admin.compute.volume_attachments(restored)]
        made.extend(volumes)
        assert volumes and {v.project_id for v in volumes} == {api.a.id}  # handed over, not left in the proxy's
        assert all(v.id != boot.id for v in volumes)
    finally:
        for thing in made:
            if isinstance(thing, openstack.compute.v2.server.Server):
                admin.compute.delete_server(thing, ignore_missing=True)
                admin.compute.wait_for_delete(thing, wait=120)
            else:
                admin.block_storage.wait_for_status(admin.block_storage.get_volume(thing.id), "available",
                                                    failures=["error"], wait=120)
                admin.block_storage.delete_volume(thing, ignore_missing=True)
