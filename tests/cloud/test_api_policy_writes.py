"""Policies written through `stackvault api` on the dev cloud's real Keystone: an admin writes, reads,
replaces and deletes one; the project's member and reader read it and may not write; another
project's member is told it does not exist; a policy of the config is changed in the config only; a
body the config's parser refuses is 400 with the parser's words; a server a written policy selects is
listed as protected, and `run-policy` backs it up by the policy's name."""

from __future__ import annotations

import re
import uuid

import pytest
import requests

from .test_api_keystone import Api
from .test_api_keystone import api as api  # a fixture, used by its name

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]  # the module fixture (~1 min)


def _call(api: Api, method: str, path: str, token: str, body: object = None) -> requests.Response:
    return requests.request(method, api.url + path, headers={"X-Auth-Token": token}, json=body, timeout=60)


def _name() -> str:
    return f"written-{uuid.uuid4().hex[:6]}"


def test_an_admin_writes_reads_replaces_and_deletes_a_policy(api: Api):
    name = _name()
    body = {"name": name, "project": api.a.id, "schedule": "0 4 * * *", "server_metadata": {"tier": "gold"},
            "retention": {"keep_daily": 7}}
    created = _call(api, "POST", "/v1/policies", api.admin_token, body)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"{api.url}/v1/policies/{name}"
    policy = created.json()["policy"]
    assert (policy["name"], policy["project_id"], policy["source"]) == (name, api.a.id, "catalog")
    assert policy["schedule"] == "0 4 * * *" and policy["server_metadata"] == {"tier": "gold"}
    assert policy["retention"]["keep_daily"] == 7
    assert _call(api, "GET", f"/v1/policies/{name}", api.admin_token).json() == {"policy": policy}

    for role in ("member", "reader"):
        token = api.a.tokens[role]
        shown = _call(api, "GET", f"/v1/policies/{name}", token)
        assert shown.status_code == 200 and shown.json() == {"policy": policy}
        assert policy in _call(api, "GET", "/v1/policies", token).json()["policies"]
        for method, path in (("POST", "/v1/policies"), ("PUT", f"/v1/policies/{name}"),
                             ("DELETE", f"/v1/policies/{name}")):
            refused = _call(api, method, path, token, {**body, "name": _name()} if method == "POST" else body)
            assert refused.status_code == 403, (role, method, refused.text)

    again = _call(api, "POST", "/v1/policies", api.admin_token, body)
    assert again.status_code == 409 and again.json()["error"]["message"] == f"policy {name!r} exists"

    replaced = _call(api, "PUT", f"/v1/policies/{name}", api.admin_token, {**body, "schedule": "30 1 * * *"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["policy"] == {**policy, "schedule": "30 1 * * *"}
    reread = _call(api, "GET", f"/v1/policies/{name}", api.a.tokens["reader"]).json()["policy"]
    assert reread["schedule"] == "30 1 * * *"

    deleted = _call(api, "DELETE", f"/v1/policies/{name}", api.admin_token)
    assert deleted.status_code == 204 and deleted.content == b""
    assert _call(api, "GET", f"/v1/policies/{name}", api.admin_token).status_code == 404
    assert name not in {p["name"] for p in _call(api, "GET", "/v1/policies", api.a.tokens["reader"]).json()["policies"]}


def test_another_projects_member_is_told_the_policy_does_not_exist(api: Api):
    name = _name()
    body = {"name": name, "project": api.a.id, "all": True}
    assert _call(api, "POST", "/v1/policies", api.admin_token, body).status_code == 201
    try:
        missing = _name()
        for method in ("GET", "PUT", "DELETE"):
            theirs = _call(api, method, f"/v1/policies/{name}", api.b.tokens["member"], body)
            nothing = _call(api, method, f"/v1/policies/{missing}", api.b.tokens["member"], body)
            assert theirs.status_code == nothing.status_code == 404, (method, theirs.text, nothing.text)
            assert theirs.json()["error"]["message"] == nothing.json()["error"]["message"].replace(missing, name)
        listed = _call(api, "GET", "/v1/policies", api.b.tokens["member"]).json()["policies"]
        assert name not in {p["name"] for p in listed}
        assert _call(api, "GET", f"/v1/policies/{name}", api.a.tokens["reader"]).status_code == 200
    finally:
        assert _call(api, "DELETE", f"/v1/policies/{name}", api.admin_token).status_code == 204


def test_a_config_policy_is_changed_in_the_config_only(api: Api):
    """nightly-a is the fixture config's: no write reaches it, and it stays as the config says."""
    body = {"project": api.a.id, "servers": ["sv-api-a"], "schedule": "0 5 * * *"}
    before = _call(api, "GET", "/v1/policies/nightly-a", api.admin_token).json()["policy"]
    assert before["source"] == "config"
    for method, path in (("PUT", "/v1/policies/nightly-a"), ("DELETE", "/v1/policies/nightly-a"),
                         ("POST", "/v1/policies")):
        refused = _call(api, method, path, api.admin_token, {**body, "name": "nightly-a"})
        assert refused.status_code == 409, (method, refused.text)
        assert refused.json()["error"]["message"] == ("policy 'nightly-a' is written in the config of "
                                                      "`stackvault server`, not through the API")
        assert refused.json()["error"]["fix"].startswith("change it in that config and reload the server (SIGHUP)")
    assert _call(api, "GET", "/v1/policies/nightly-a", api.admin_token).json()["policy"] == before
    # Project a's member may not write it either way; project b's learns nothing of it.
    assert _call(api, "PUT", "/v1/policies/nightly-a", api.a.tokens["member"], body).status_code == 403
    assert _call(api, "PUT", "/v1/policies/nightly-a", api.b.tokens["member"], body).status_code == 404


@pytest.mark.parametrize(("body", "message", "fix"), [
    ({"schedule": "tomorrow", "all": True},
     "bad value 'tomorrow' for schedule of policy '{name}' in the request body: not a cron expression",
     'write five fields (minute hour day month weekday), e.g. "0 2 * * *" for 02:00 daily'),
    ({"all": True, "colour": "blue"},
     "unknown key 'colour' in policy '{name}' in the request body", None),
    ({"schedule": "0 1 * * *"},
     "policy '{name}' in the request body selects nothing to back up",
     "add servers, volumes, all = true, server_tags or server_metadata"),
    ({"all": True, "level": "full"},
     "level of policy '{name}' in the request body must be incremental or differential",
     "Fulls come from full_on and full_every_days; level is what runs between them"),
    ({"all": True, "full_every_days": 10**9},
     "bad value 1000000000 for full_every_days of policy '{name}' in the request body: more than 36500 days",
     "write 0 for no Full forced by age"),
    ({"all": True, "os_cloud": "another-cloud-admin"},
     "policy '{name}' in the request body sets os_cloud, the proxy's own credentials or stores", None),
    ({"all": True, "copy_to": "s3://elsewhere/bucket"},
     "policy '{name}' in the request body sets copy_to, the proxy's own credentials or stores", None),
])
def test_a_body_the_configs_parser_refuses_is_400_with_its_words(api: Api, body: dict, message: str, fix: str | None):
    name = _name()
    refused = _call(api, "POST", "/v1/policies", api.admin_token, {"name": name, "project": api.a.id, **body})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["message"] == message.format(name=name)
    if fix is not None:
        assert error["fix"] == fix
    assert _call(api, "GET", f"/v1/policies/{name}", api.admin_token).status_code == 404


def test_a_policy_needs_a_project_and_a_name(api: Api):
    no_project = _call(api, "POST", "/v1/policies", api.admin_token, {"name": _name(), "all": True})
    assert no_project.status_code == 400 and "names no project" in no_project.json()["error"]["message"]
    bad_name = _call(api, "POST", "/v1/policies", api.admin_token, {"name": "a/b", "project": api.a.id, "all": True})
    assert bad_name.status_code == 400
    assert bad_name.json()["error"]["message"] == "bad policy name 'a/b' in the request body"
    not_json = requests.post(api.url + "/v1/policies", headers={"X-Auth-Token": api.admin_token}, data="all = true",
                             timeout=60)
    assert not_json.status_code == 400, not_json.text
    assert not_json.json()["error"]["message"] == "the request body is not a JSON object"
    huge = {"name": _name(), "project": api.a.id, "servers": ["x" * 1000] * 1000}
    assert _call(api, "POST", "/v1/policies", api.admin_token, huge).status_code == 413, "a MiB is not read"
    assert _call(api, "POST", "/v1/policies", api.a.tokens["reader"], huge).status_code == 403, \
        "one who may not write is refused before the body is read"


def test_a_server_a_written_policy_selects_is_protected_and_run_policy_backs_it_up(api: Api):
    def protection() -> dict:
        reply = _call(api, "GET", "/v1/servers", api.b.tokens["reader"])
        assert reply.status_code == 200, reply.text
        return {s["id"]: s for s in reply.json()["servers"]}[api.b.server_id]

    assert protection()["protected"] is False  # no policy of the fixture's config selects it
    name = _name()
    body = {"name": name, "project": api.b.id, "servers": ["sv-api-b"]}
    assert _call(api, "POST", "/v1/policies", api.admin_token, body).status_code == 201
    try:
        server = protection()
        assert server["protected"] is True and server["policies"] == [name], server

        report = api.cli.run("run-policy", name, timeout=600).data  # the proxy's own CLI finds it by name
        assert report["status"] == "success", report
        assert [s["name"] for s in report["servers"]] == ["sv-api-b"]
        backed_up = report["servers"][0]["backup_id"]
        assert protection()["last_backup"]["backup_id"] == backed_up
    finally:
        assert _call(api, "DELETE", f"/v1/policies/{name}", api.admin_token).status_code == 204
    assert protection()["protected"] is False


def test_the_dashboards_policies_page_shows_a_written_policy_to_its_project(api: Api):
    name = _name()
    assert _call(api, "POST", "/v1/policies", api.admin_token,
                 {"name": name, "project": api.a.id, "server_tags": ["gold"]}).status_code == 201
    try:
        pages = {}
        for project in (api.a, api.b):
            web = requests.Session()
            form = web.get(api.url + "/dashboard/login", timeout=60).text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert csrf, form
            logged_in = web.post(api.url + "/dashboard/login", timeout=60, data={
                "csrf_token": csrf[1], "method": "password", "username": project.users["reader"],
                "password": api.password, "project": project.name, "domain": "Default"})
            assert logged_in.status_code == 200 and logged_in.url.endswith("/dashboard/"), logged_in.url
            page = web.get(api.url + "/dashboard/policies", timeout=60)
            assert page.status_code == 200, page.text
            pages[project.id] = page.text
        mine = pages[api.a.id]
        assert f"<h2>{name} " in mine and "nightly-a" in mine
        written = re.findall(r"<dt>Written</dt><dd>([^<]*)</dd>", mine)
        assert sorted(set(written)) == ["in stackvault&#39;s configuration", "through the API"], written
        assert name not in pages[api.b.id]
    finally:
        assert _call(api, "DELETE", f"/v1/policies/{name}", api.admin_token).status_code == 204
