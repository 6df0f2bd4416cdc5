"""The emulated Nova lists and rejects as real Nova does (divergences Tempest found): an admin's
`all_tenants` listing narrowed by `tenant_id`/`project_id`, 400s for what Nova's JSON schemas
refuse (names, metadata, access IPs, `limit`, `changes-since`), update's short view below 2.75,
`ips/{network}`, a deleted server's instance actions from 2.21 on."""

from __future__ import annotations

import io

import pytest

from devcloud import rest
from devcloud.nova.testing import IMAGE_AGENT, NovaUser, wait_for

pytestmark = [pytest.mark.devcloud]


@pytest.fixture(scope="module")
def image_id(images) -> str:
    return images[IMAGE_AGENT]


@pytest.fixture(scope="module")
def two_projects(admin, demo, image_id):
    """One server in the admin project and one in the demo project, deleted at the end."""
    mine = admin.boot("validation-admin", image_id)
    theirs = demo.boot("validation-demo", image_id)
    yield mine, theirs
    for who, server_id in ((admin, mine), (demo, theirs)):
        who("DELETE", f"/servers/{server_id}")


def listed(nova: NovaUser, query: str) -> set[str]:
    return {s["id"] for s in nova("GET", f"/servers?{query}")["servers"]}


@pytest.mark.parametrize("param", ["tenant_id", "project_id"])
def test_all_tenants_listing_is_narrowed_to_the_project_asked_for(admin, demo, two_projects, param):
    mine, theirs = two_projects
    assert {mine, theirs} <= listed(admin, "all_tenants=1")
    only_demo = listed(admin, f"all_tenants=1&{param}={demo.project_id}")
    assert theirs in only_demo and mine not in only_demo
    only_admin = listed(admin, f"all_tenants=true&{param}={admin.project_id}")
    assert mine in only_admin and theirs not in only_admin


def test_without_all_tenants_an_admin_lists_its_own_project_whatever_the_filter(admin, demo,
                                                                               two_projects):
    mine, theirs = two_projects
    own = listed(admin, f"tenant_id={demo.project_id}")
    assert mine in own and theirs not in own
    assert listed(admin, f"project_id={demo.project_id}") == own
    assert listed(admin, "all_tenants=0") == own
    assert listed(admin, "all_tenants") >= {mine, theirs}  # present and empty means yes


def test_host_filter_matches_the_compute_host_only(admin, two_projects):
    mine, theirs = two_projects
    assert {mine, theirs} <= listed(admin, "all_tenants=1&host=devcloud")
    assert not listed(admin, "all_tenants=1&host=elsewhere")


def test_bad_all_tenants_and_limit_values_are_400(admin, two_projects):
    for query in ("all_tenants=maybe", "limit=-1", "limit=abc", "limit=1.5"):
        assert admin.status("GET", f"/servers?{query}")[0] == 400, query
    assert "limit" in admin.status("GET", "/servers?limit=-1")[1]
    assert len(admin("GET", "/servers?all_tenants=1&limit=1")["servers"]) == 1


def test_flavor_listing_pages_with_limit_and_marker(admin):
    every = [f["id"] for f in admin("GET", "/flavors")["flavors"]]
    assert len(every) >= 3
    assert [f["id"] for f in admin("GET", "/flavors?limit=2")["flavors"]] == every[:2]
    after = admin("GET", f"/flavors/detail?marker={every[0]}")["flavors"]
    assert [f["id"] for f in after] == every[1:]
    assert admin.status("GET", "/flavors?marker=nonexistent")[0] == 400
    assert admin.status("GET", "/flavors?limit=-3")[0] == 400


LONG = "x" * 256


@pytest.mark.parametrize("body", [
    {"name": LONG},
    {"name": "   "},
    {"name": "ok", "metadata": {LONG: "v"}},
    {"name": "ok", "metadata": {"": "v"}},
    {"name": "ok", "metadata": {"k": LONG}},
    {"name": "ok", "metadata": {"k": 1}},
], ids=["long-name", "blank-name", "long-key", "blank-key", "long-value", "non-string-value"])
def test_server_create_refuses_what_nova_schemas_refuse(admin, image_id, body):
    server = {"flavorRef": "1", "imageRef": image_id, "networks": "auto", **body}
    status, message = admin.status("POST", "/servers", {"server": server})
    assert status == 400 and "Invalid input for field/attribute" in message


def test_metadata_and_rename_refuse_what_nova_schemas_refuse(admin, two_projects):
    mine, _ = two_projects
    path = f"/servers/{mine}"
    assert admin.status("PUT", f"{path}/metadata", {"metadata": {"": "v"}})[0] == 400
    assert admin.status("POST", f"{path}/metadata", {"metadata": {LONG: "v"}})[0] == 400
    assert admin.status("PUT", f"{path}/metadata/k", {"meta": {"k": LONG}})[0] == 400
    assert admin.status("PUT", f"{path}", {"server": {"name": LONG}})[0] == 400
    assert admin.status("POST", f"{path}/action",
                        {"createImage": {"name": LONG}})[0] == 400
    assert admin.status("POST", f"{path}/action",
                        {"createImage": {"name": "snap", "metadata": {"": "v"}}})[0] == 400
    # what Nova accepts still works, and nothing refused above was stored
    assert admin("PUT", f"{path}/metadata/k", {"meta": {"k": "v" * 255}})["meta"] == {"k": "v" * 255}
    assert admin("GET", f"{path}/metadata")["metadata"] == {"k": "v" * 255}
    assert admin("GET", path)["server"]["name"] == "validation-admin"


def test_access_ips_are_checked_and_stored_as_nova_stores_them(admin, image_id, two_projects):
    mine, _ = two_projects
    for field, bad in (("accessIPv4", "1.1.1.1.1"), ("accessIPv6", "notvalid"),
                       ("accessIPv4", "::1")):
        server = {"name": "ok", "flavorRef": "1", "imageRef": image_id, "networks": "auto",
                  field: bad}
        assert admin.status("POST", "/servers", {"server": server})[0] == 400, (field, bad)
        assert admin.status("PUT", f"/servers/{mine}", {"server": {field: bad}})[0] == 400
    long_form = "0000:0000:0000:0000:0000:babe:220.12.22.2"
    admin("PUT", f"/servers/{mine}", {"server": {"accessIPv6": long_form}})
    assert admin("GET", f"/servers/{mine}")["server"]["accessIPv6"] == "::babe:dc0c:1602"


def test_update_answers_the_short_view_below_2_75(admin, two_projects):
    mine, _ = two_projects
    body = {"server": {"name": "validation-admin"}}
    short = admin("PUT", f"/servers/{mine}", body, version="2.74")["server"]
    assert short["name"] == "validation-admin" and "tags" in short
    assert not [k for k in short if k.startswith(("OS-EXT-STS:", "OS-EXT-SRV-ATTR:", "OS-EXT-AZ:"))]
    assert "security_groups" not in short and "key_name" not in short
    full = admin("PUT", f"/servers/{mine}", body, version="2.75")["server"]
    assert "OS-EXT-STS:vm_state" in full and "security_groups" in full


def test_changes_since_must_be_a_date_time(admin, two_projects):
    assert admin.status("GET", "/servers?changes-since=2011/01/01")[0] == 400
    assert two_projects[0] in listed(admin, "changes-since=2000-01-01T00:00:00Z")


def test_an_image_needing_more_memory_than_the_flavor_is_400(devcloud, admin):
    glance = devcloud.ctx.public_url("glance") + "/v2/images"
    image = rest.request("POST", glance, token=admin.token, body={
        "name": "validation-min-ram", "disk_format": "raw", "container_format": "bare",
        "min_ram": 4096})[2]
    try:
        rest.request("PUT", f"{glance}/{image['id']}/file", token=admin.token,
                     stream=io.BytesIO(b"\0" * 4096), length=4096,
                     headers={"Content-Type": "application/octet-stream"})
        server = {"name": "ok", "flavorRef": "1", "imageRef": image["id"], "networks": "auto"}
        status, message = admin.status("POST", "/servers", {"server": server})
        assert status == 400 and "memory is too small" in message
    finally:
        rest.request("DELETE", f"{glance}/{image['id']}", token=admin.token)


def test_ips_of_one_network(admin, two_projects):
    mine, _ = two_projects
    private = admin("GET", f"/servers/{mine}/ips/private")["private"]
    assert private == admin("GET", f"/servers/{mine}/ips")["addresses"]["private"]
    assert admin.status("GET", f"/servers/{mine}/ips/elsewhere")[0] == 404


def test_a_deleted_servers_instance_actions_from_2_21(admin, demo, image_id):
    server_id = admin.boot("validation-deleted", image_id)
    wait_for("server ACTIVE", lambda: admin("GET", f"/servers/{server_id}")["server"]["status"]
             == "ACTIVE", timeout=120)
    admin("DELETE", f"/servers/{server_id}")
    wait_for("server gone", lambda: server_id not in listed(admin, ""), timeout=120)
    path = f"/servers/{server_id}/os-instance-actions"
    actions = admin("GET", path)["instanceActions"]  # 2.79
    assert [a["action"] for a in actions] == ["delete", "create"]
    shown = admin("GET", f"{path}/{actions[0]['request_id']}")["instanceAction"]
    assert shown["action"] == "delete" and shown["events"]
    assert admin.status("GET", path, version="2.20")[0] == 404
    assert demo.status("GET", path)[0] == 404  # another project's, deleted or not


def test_lock_and_unlock(admin, demo, two_projects):
    _, theirs = two_projects
    path = f"/servers/{theirs}/action"
    wait_for("server ACTIVE", lambda: demo("GET", f"/servers/{theirs}")["server"]["status"]
             == "ACTIVE", timeout=120)
    demo("POST", path, {"lock": {"locked_reason": "backup running"}})
    shown = demo("GET", f"/servers/{theirs}")["server"]
    assert shown["locked"] is True and shown["locked_reason"] == "backup running"
    status, message = demo.status("POST", path, {"os-stop": None})
    assert status == 409 and "is locked" in message
    assert demo.status("DELETE", f"/servers/{theirs}")[0] == 409
    demo("POST", path, {"unlock": None})
    assert demo("GET", f"/servers/{theirs}")["server"]["locked"] is False
    admin("POST", path, {"lock": None})  # by an admin of another project: its owner cannot unlock
    assert demo.status("POST", path, {"unlock": None})[0] == 403
    admin("POST", path, {"unlock": None})
    assert demo("GET", f"/servers/{theirs}")["server"]["locked"] is False
    actions = [a["action"] for a in demo("GET", f"/servers/{theirs}/os-instance-actions")
               ["instanceActions"]]
    assert actions[:4] == ["unlock", "lock", "unlock", "lock"]


def test_reset_state_is_for_admins_and_sets_error_or_active(admin, demo, two_projects):
    _, theirs = two_projects
    path = f"/servers/{theirs}/action"
    assert demo.status("POST", path, {"os-resetState": {"state": "error"}})[0] == 403
    assert admin.status("POST", path, {"os-resetState": {"state": "stopped"}})[0] == 400
    admin("POST", path, {"os-resetState": {"state": "error"}})
    assert demo("GET", f"/servers/{theirs}")["server"]["status"] == "ERROR"
    assert theirs in listed(admin, "all_tenants=1&status=ERROR")
    admin("POST", path, {"os-resetState": {"state": "active"}})
    assert demo("GET", f"/servers/{theirs}")["server"]["status"] == "ACTIVE"
    actions = demo("GET", f"/servers/{theirs}/os-instance-actions")["instanceActions"]
    assert [a["action"] for a in actions[:2]] == ["resetState", "resetState"]
