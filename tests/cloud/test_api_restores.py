"""Restores through `stackvault api` against the dev cloud's real Keystone, Glance and Nova: a project
member's restore becomes an ACTIVE server in that member's project (and in no other), started with a
Keystone trust the test can see; another project's backup is the same 404 as an unknown one.
"""

from __future__ import annotations

import time

import pytest

from .conftest import raw_copy, same_disk

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


def test_a_members_restore_becomes_an_active_server_in_their_project_only(api: Api, devcloud, fast_cloud,
                                                                         tmp_path):
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
        # its root disk holds the backed-up bytes (the fixture wrote project a's own MiB into the original):
        # those the proxy's own `restore --to file:` writes, and not project b's
        original = devcloud.state_dir / "nova" / "instances" / api.a.server_id / "disk"
        restored = raw_copy(devcloud.state_dir / "nova" / "instances" / server.id / "disk", "qcow2",
                            tmp_path / "restored.raw")
        assert same_disk(restored, raw_copy(original, "qcow2", tmp_path / "original.raw"))
        with open(restored, "rb") as f:
            f.seek(200 << 20)
            assert f.read(1 << 20) == b"a" * (1 << 20)
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




def test_a_volume_written_through_the_proxy_is_handed_over_with_the_members_trust(api: Api, devcloud, tmp_path,
                                                                                  monkeypatch):
    """The last step of restoring a volume for a project: made in the proxy's project (where the proxy's
    server can attach it), then moved by a Cinder volume transfer that the member's trust accepts."""
    import openstack

    from stackvault.api.delegation import trust_connection
    from stackvault.api.service import ApiService
    from stackvault.cloud.handover import hand_over_volume
    from stackvault.config import load_settings

    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(devcloud.clouds_yaml))
    config = tmp_path / "stackvault.toml"
    config.write_text('[cloud]\nos_cloud = "devcloud"\n[api]\nservice_cloud = "devcloud-stackvault"\n')
    svc = ApiService(load_settings(str(config), repo=str(tmp_path / "repo"), workdir=str(tmp_path / "work")))
    member = openstack.connect(auth_url=api.auth_url, token=api.a.tokens["member"], auth_type="v3token",
                               project_id=api.a.id, load_yaml_config=False, load_envvars=False)
    trust = member.identity.create_trust(trustor_user_id=member.current_user_id,
                                         trustee_user_id=svc.service_user_id, project_id=api.a.id,
                                         impersonation=True, roles=[{"name": "member"}])
    admin = devcloud.connect()
    volume = admin.block_storage.create_volume(size=1, name="sv-handed-over")
    try:
        admin.block_storage.wait_for_status(volume, "available", failures=["error"], wait=120)
        assert admin.block_storage.get_volume(volume.id).project_id == admin.current_project_id
        hand_over_volume(admin, trust_connection(svc, trust.id), volume.id)
        moved = admin.block_storage.get_volume(volume.id)
        assert moved.project_id == api.a.id and moved.status == "available"
        assert volume.id in {v.id for v in member.block_storage.volumes()}
        assert volume.id not in {v.id for v in admin.block_storage.volumes()}  # the proxy's project has it no more
    finally:
        admin.block_storage.delete_volume(volume.id, ignore_missing=True)
        member.identity.delete_trust(trust, ignore_missing=True)
