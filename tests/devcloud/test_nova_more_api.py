"""More of Nova's API, as real Nova answers it (what Tempest found missing): createBackup with its
rotation, the compute `/images` proxy below 2.36, multiple create, server groups, keypair checks,
os-quota-sets enforced on create, security groups added to and removed from a server."""

from __future__ import annotations

from typing import Any

import pytest

from devcloud.nova.testing import IMAGE_AGENT, NovaUser, wait_active, wait_for

pytestmark = [pytest.mark.devcloud]


@pytest.fixture(scope="module")
def image_id(images) -> str:
    return images[IMAGE_AGENT]


def delete_all(nova: NovaUser, ids: list[str]) -> None:
    for server_id in ids:
        nova("DELETE", f"/servers/{server_id}")
    wait_for("servers gone", lambda: not set(ids) & {s["id"] for s in
                                                     nova("GET", "/servers")["servers"]},
             timeout=300)


@pytest.fixture(scope="module")
def server(demo, image_id):
    server_id = demo.boot("more-api", image_id)
    wait_active(demo, server_id)
    yield server_id
    delete_all(demo, [server_id])


def backups(nova: NovaUser, server_id: str) -> list[dict[str, Any]]:
    images = nova("GET", f"/images/detail?server={server_id}&type=backup", version="2.35")
    return images["images"]


def test_create_backup_keeps_the_newest_rotation_backups_of_its_type(demo, server):
    path = f"/servers/{server}/action"
    made = []
    for n in range(3):
        made.append(demo("POST", path, {"createBackup": {
            "name": f"daily-{n}", "backup_type": "daily", "rotation": 2}},
            version="2.45")["image_id"])
        wait_active(demo, server)
        wait_for("backup ACTIVE", lambda: all(i["status"] == "ACTIVE"
                                              for i in backups(demo, server)), timeout=120)
    kept = backups(demo, server)
    assert {i["id"] for i in kept} == set(made[1:])
    assert all(i["metadata"]["image_type"] == "backup" and
               i["metadata"]["backup_type"] == "daily" for i in kept)
    actions = demo("GET", f"/servers/{server}/os-instance-actions")["instanceActions"]
    assert [a["action"] for a in actions[:3]] == ["createBackup"] * 3
    assert demo.status("POST", path, {"createBackup": {"name": "x", "backup_type": "daily",
                                                       "rotation": -1}})[0] == 400
    for image in kept:
        demo("DELETE", f"/images/{image['id']}", version="2.35")


def test_images_proxy_below_2_36(demo, image_id):
    listed = demo("GET", "/images", version="2.35")["images"]
    assert image_id in {i["id"] for i in listed}
    shown = demo("GET", f"/images/{image_id}", version="2.35")["image"]
    assert shown["status"] == "ACTIVE" and shown["progress"] == 100
    assert shown["metadata"]["hw_qemu_guest_agent"] == "yes"
    assert len(demo("GET", "/images/detail?limit=1", version="2.35")["images"]) == 1
    assert demo.status("GET", f"/images/{image_id}", version="2.36")[0] == 404
    assert demo.status("GET", "/images/00000000-0000-0000-0000-000000000000",
                       version="2.35")[0] == 404


def test_multiple_create_names_and_reservation_id(admin, demo, image_id):
    body = {"server": {"name": "many", "flavorRef": "1", "imageRef": image_id,
                       "networks": "auto", "min_count": 2, "max_count": 2,
                       "return_reservation_id": True}}
    reservation = demo("POST", "/servers", body)["reservation_id"]
    mine = [s for s in demo("GET", "/servers/detail")["servers"] if s["name"].startswith("many-")]
    try:
        assert sorted(s["name"] for s in mine) == ["many-1", "many-2"]
        for s in mine:
            shown = admin("GET", f"/servers/{s['id']}")["server"]
            assert shown["OS-EXT-SRV-ATTR:reservation_id"] == reservation
    finally:
        delete_all(demo, [s["id"] for s in mine])
    for counts in ({"min_count": 0}, {"max_count": 2.5}, {"min_count": 3, "max_count": 2}):
        bad = {"server": {"name": "bad", "flavorRef": "1", "imageRef": image_id,
                          "networks": "auto", **counts}}
        assert demo.status("POST", "/servers", bad)[0] == 400, counts


def test_quota_sets_are_shown_updated_and_enforced_on_create(admin, demo, image_id):
    path = f"/os-quota-sets/{demo.project_id}"
    assert demo("GET", f"{path}/defaults")["quota_set"]["instances"] == 10
    assert demo.status("PUT", path, {"quota_set": {"instances": 1}})[0] == 403
    used = demo("GET", f"{path}/detail")["quota_set"]["instances"]["in_use"]
    admin("PUT", path, {"quota_set": {"instances": used}})
    try:
        assert demo("GET", path)["quota_set"]["instances"] == used
        status, message = demo.status("POST", "/servers", {"server": {
            "name": "over", "flavorRef": "1", "imageRef": image_id, "networks": "auto"}})
        assert status == 403 and "Quota exceeded for instances" in message
        assert demo("GET", "/limits")["limits"]["absolute"]["maxTotalInstances"] == used
    finally:
        admin("DELETE", path)
    assert demo("GET", path)["quota_set"]["instances"] == 10
    classes = "/os-quota-class-sets/default"
    assert admin("GET", classes)["quota_class_set"]["instances"] == 10
    assert demo.status("GET", classes)[0] == 403
    admin("PUT", classes, {"quota_class_set": {"instances": 12}})
    try:  # the default class is every project's default
        assert demo("GET", path)["quota_set"]["instances"] == 12
    finally:
        admin("PUT", classes, {"quota_class_set": {"instances": 10}})


def test_server_groups_and_their_members(demo, image_id):
    group = demo("POST", "/os-server-groups", {"server_group": {
        "name": "app", "policy": "affinity"}}, version="2.64")["server_group"]
    try:
        assert group["policy"] == "affinity" and group["members"] == []
        assert group in demo("GET", "/os-server-groups", version="2.64")["server_groups"]
        old = demo("GET", f"/os-server-groups/{group['id']}", version="2.63")["server_group"]
        assert old["policies"] == ["affinity"]
        body = {"server": {"name": "in-group", "flavorRef": "1", "imageRef": image_id,
                           "networks": "auto"}, "os:scheduler_hints": {"group": group["id"]}}
        member = demo("POST", "/servers", body)["server"]["id"]
        wait_active(demo, member)
        shown = demo("GET", f"/os-server-groups/{group['id']}", version="2.64")["server_group"]
        assert shown["members"] == [member]
        assert demo("GET", f"/servers/{member}", version="2.71")["server"]["server_groups"] == [
            group["id"]]
        delete_all(demo, [member])
        assert demo("GET", f"/os-server-groups/{group['id']}")["server_group"]["members"] == []
        assert demo.status("POST", "/os-server-groups", {"server_group": {
            "name": "x", "policy": "sideways"}}, version="2.64")[0] == 400
    finally:
        demo("DELETE", f"/os-server-groups/{group['id']}")
    assert demo.status("GET", f"/os-server-groups/{group['id']}")[0] == 404


@pytest.mark.parametrize("keypair", [
    {"name": "bad/name", "public_key": None},
    {"name": "x" * 256, "public_key": None},
    {"name": "junk-key", "public_key": "ssh-rsa JUNK nova@ubuntu"},
], ids=["unsafe-name", "long-name", "junk-public-key"])
def test_keypairs_refuse_what_nova_refuses(demo, keypair):
    body = {k: v for k, v in keypair.items() if v is not None}
    status, message = demo.status("POST", "/os-keypairs", {"keypair": body}, version="2.1")
    assert status == 400 and "Keypair data is invalid" in message


def test_security_groups_are_removed_from_and_added_to_a_server(demo, server):
    path = f"/servers/{server}/action"
    demo("POST", path, {"removeSecurityGroup": {"name": "default"}})
    assert "security_groups" not in demo("GET", f"/servers/{server}")["server"]
    assert demo.status("POST", path, {"removeSecurityGroup": {"name": "default"}})[0] == 400
    assert demo.status("POST", path, {"addSecurityGroup": {"name": "nonexistent"}})[0] == 404
    demo("POST", path, {"addSecurityGroup": {"name": "default"}})
    assert demo("GET", f"/servers/{server}")["server"]["security_groups"] == [
        {"name": "default"}]


def test_password_version_documents_and_what_nova_refuses(devcloud, demo, image_id, server):
    assert demo("GET", f"/servers/{server}/os-server-password") == {"password": ""}
    demo("DELETE", f"/servers/{server}/os-server-password")
    from devcloud import rest
    root = devcloud.ctx.public_url("nova")
    v2 = rest.request("GET", f"{root}/v2/")[2]["version"]
    assert v2["id"] == "v2.0" and v2["links"][0]["href"].endswith("/v2/")
    assert demo.status("DELETE", "/images/", version="2.35")[0] == 404
    bad_bdm = {"server": {"name": "bad-bdm", "flavorRef": "1", "imageRef": image_id,
                          "networks": "auto", "block_device_mapping_v2": [
                              {"source_type": "blank", "destination_type": "invalid",
                               "volume_size": 1}]}}
    assert demo.status("POST", "/servers", bad_bdm)[0] == 400
