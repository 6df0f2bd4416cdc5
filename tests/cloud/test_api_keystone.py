"""`stackvault api` against the dev cloud's real Keystone: two projects, a member and a reader in each,
and the cloud's admin. What each may and may not see; another project's backup or job asked for by id
is the same 404 as one that does not exist; a forged or revoked token is 401; an operator's policy
file changes who may do what without a restart.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import openstack
import os_service_types
import pytest
import requests

from devcloud.context import free_port
from devcloud.keystone import STACKVAULT_API, register_stackvault_api

from .conftest import CloudUser, qemu_io_write

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]  # two servers booted and backed up first: ~1 min


@dataclass
class Project:
    id: str
    name: str
    server_id: str
    backup_id: str
    tokens: dict[str, str]  # role -> a token of a user holding it in this project
    users: dict[str, str]  # role -> the name of that user


@dataclass
class Api:
    url: str
    a: Project
    b: Project
    admin_token: str
    policy_file: Path
    auth_url: str
    new_token: object  # (user, password, project) -> a fresh token
    password: str  # every project user's
    cli: CloudUser  # the proxy's own `stackvault`, on the API's repository and catalog

    def get(self, path: str, token: str | None, **params: str) -> requests.Response:
        headers = {"X-Auth-Token": token} if token else {}
        return requests.get(self.url + path, headers=headers, params=params, timeout=60)

    def put(self, path: str, token: str) -> requests.Response:
        return requests.put(self.url + path, headers={"X-Auth-Token": token}, timeout=60)

    def post(self, path: str, token: str, **body: str) -> requests.Response:
        return requests.post(self.url + path, headers={"X-Auth-Token": token}, json=body, timeout=60)


def _token(auth_url: str, user: str, password: str, project_id: str) -> str:
    conn = openstack.connect(auth_url=auth_url, username=user, password=password, project_id=project_id,
                             user_domain_name="Default", load_yaml_config=False, load_envvars=False)
    return conn.auth_token


@pytest.fixture(scope="module")
def api(devcloud, tmp_path_factory) -> Api:
    admin = devcloud.connect()
    auth_url = devcloud.ctx.auth_url()
    suffix = uuid.uuid4().hex[:8]
    password = secrets.token_urlsafe(12)
    roles = {r: admin.identity.find_role(r, ignore_missing=False) for r in ("member", "reader")}
    image = admin.image.find_image("sv-agent", ignore_missing=False)
    flavor = admin.compute.find_flavor("m1.tiny", ignore_missing=False)
    network = admin.network.find_network("private", ignore_missing=False)

    root = tmp_path_factory.mktemp("api")
    user = CloudUser(root / "sv")
    user.configure(devcloud)
    user.run("init", "--block-size", "64KiB")

    made: list = []
    projects: dict[str, Project] = {}
    for letter in ("a", "b"):
        project = admin.identity.create_project(name=f"sv-api-{letter}-{suffix}", domain_id="default")
        made.append(project)
        tokens, users = {}, {}
        for role, role_obj in roles.items():
            person = admin.identity.create_user(name=f"sv-api-{letter}-{role}-{suffix}", password=password,
                                                domain_id="default", default_project_id=project.id)
            made.append(person)
            users[role] = person.name
            admin.identity.assign_project_role_to_user(project, person, role_obj)
            tokens[role] = _token(auth_url, person.name, password, project.id)
        member = openstack.connect(auth_url=auth_url, token=tokens["member"], auth_type="v3token",
                                   project_id=project.id, load_yaml_config=False, load_envvars=False)
        server = member.compute.create_server(name=f"sv-api-{letter}", image_id=image.id, flavor_id=flavor.id,
                                              networks=[{"uuid": network.id}])
        server = member.compute.wait_for_server(server, wait=300)
        made.insert(0, server)
        if devcloud.ctx.fast:  # data of its own on its disk, written as its guest would: what a restore must bring back
            disk = devcloud.state_dir / "nova" / "instances" / server.id / "disk"
            qemu_io_write(disk, "qcow2", offset=200 << 20, pattern=ord(letter), length=1 << 20)
        backup = user.run("backup", "--server", server.id, "--project", project.id, timeout=600).data
        backup_id = backup["servers"][0]["backup_id"]
        projects[letter] = Project(project.id, project.name, server.id, backup_id, tokens, users)

    policy_file = root / "policy.yaml"
    policy_file.write_text("# the defaults\n")
    port = free_port()
    with user.config.open("a") as config:
        config.write(f'\n[api]\nlisten = "127.0.0.1:{port}"\nservice_cloud = "devcloud-stackvault"\n'
                     f'policy_file = "{policy_file}"\n'
                     # one policy takes project a's server by name, one its servers that opt in by metadata;
                     # one takes every server of the admin's project
                     f'\n[policy.nightly-a]\nproject = "{projects["a"].id}"\nservers = ["sv-api-a"]\n'
                     f'\n[policy.opt-in-a]\nproject = "{projects["a"].id}"\nserver_metadata = {{ backup = "yes" }}\n'
                     '\n[policy.admin-project]\nall = true\n')
    server_proc = user.popen("api")
    # Its log (a line per request) is read as it comes: a full pipe would stop the API mid-test.
    server_log: list[str] = []
    threading.Thread(target=lambda: server_log.extend(server_proc.stderr or ()), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(url + "/v1/health", timeout=10).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert server_proc.poll() is None, "".join(server_log[-40:])
        assert time.monotonic() < deadline, "stackvault api did not answer /v1/health within 120 s"
        time.sleep(0.5)
    register_stackvault_api(devcloud.ctx, url)

    def new_token(name: str, project_id: str) -> str:
        return _token(auth_url, name, password, project_id)

    yield Api(url, projects["a"], projects["b"], admin.auth_token, policy_file, auth_url, new_token, password, user)

    server_proc.terminate()
    try:
        server_proc.wait(timeout=120)  # generous: a job under way in the API process may delay its exit
    finally:
        if server_proc.poll() is None:
            server_proc.kill()
    for thing in made:
        if isinstance(thing, openstack.compute.v2.server.Server):
            admin.compute.delete_server(thing, ignore_missing=True)
            admin.compute.wait_for_delete(thing, wait=120)
        elif isinstance(thing, openstack.identity.v3.user.User):
            admin.identity.delete_user(thing, ignore_missing=True)
        else:
            admin.identity.delete_project(thing, ignore_missing=True)


def _ids(items: list[dict], key: str) -> set[str]:
    return {item[key] for item in items}


def test_the_catalog_lists_the_api_under_a_type_no_other_project_uses(api, devcloud):
    assert not os_service_types.ServiceTypes().is_known(STACKVAULT_API[1])
    listed = devcloud.openstack("catalog", "list", "-f", "value", "-c", "Name", "-c", "Type").stdout
    assert f"{STACKVAULT_API[0]} {STACKVAULT_API[1]}" in listed.splitlines()


@pytest.mark.parametrize("role", ["member", "reader"])
def test_a_project_sees_its_own_backups_only(api, role):
    for mine, theirs in ((api.a, api.b), (api.b, api.a)):
        reply = api.get("/v1/backups", mine.tokens[role])
        assert reply.status_code == 200, reply.text
        listed = _ids(reply.json()["backups"], "backup_id")
        assert mine.backup_id in listed
        assert theirs.backup_id not in listed
        assert {b["project_id"] for b in reply.json()["backups"]} == {mine.id}


def test_a_backup_is_shown_to_its_project(api):
    reply = api.get(f"/v1/backups/{api.a.backup_id}", api.a.tokens["reader"])
    assert reply.status_code == 200, reply.text
    backup = reply.json()["backup"]
    assert backup["backup_id"] == api.a.backup_id
    assert backup["source"]["server"]["id"] == api.a.server_id


def test_another_projects_backup_by_id_is_404_as_an_unknown_one(api):
    """By its id, and by a prefix of it that is unique in the repository (ids begin with their time)."""
    unknown = "29991231T235959999Z-ffffff"
    for ref, missing in ((api.b.backup_id, unknown), (api.b.backup_id[:-2], unknown[:-2])):
        theirs = api.get(f"/v1/backups/{ref}", api.a.tokens["member"])
        assert theirs.status_code == 404, theirs.text
        nothing = api.get(f"/v1/backups/{missing}", api.a.tokens["member"])
        assert nothing.status_code == 404
        assert theirs.json()["error"] == {**nothing.json()["error"],
                                          "message": nothing.json()["error"]["message"].replace(missing, ref)}
        assert api.get(f"/v1/backups/{ref}", api.b.tokens["reader"]).status_code == 200


def test_jobs_of_another_project_are_neither_listed_nor_shown(api):
    reply = api.get("/v1/jobs", api.a.tokens["reader"])
    assert reply.status_code == 200, reply.text
    jobs = reply.json()["jobs"]
    assert api.a.backup_id in {j["backup_id"] for j in jobs}
    assert api.b.backup_id not in {j["backup_id"] for j in jobs}
    admin_jobs = api.get("/v1/jobs", api.admin_token, all_projects="1").json()["jobs"]
    b_job = next(j["job_id"] for j in admin_jobs if j["backup_id"] == api.b.backup_id)
    assert api.get(f"/v1/jobs/{b_job}", api.a.tokens["member"]).status_code == 404
    shown = api.get(f"/v1/jobs/{b_job}", api.b.tokens["reader"])
    assert shown.status_code == 200 and shown.json()["job"]["status"] in ("success", "warning")


def test_servers_carry_their_last_backup_and_stay_in_their_project(api):
    reply = api.get("/v1/servers", api.a.tokens["member"])
    assert reply.status_code == 200, reply.text
    servers = {s["id"]: s for s in reply.json()["servers"]}
    assert api.b.server_id not in servers
    mine = servers[api.a.server_id]
    assert mine["last_backup"]["backup_id"] == api.a.backup_id
    assert mine["protected"] is True and mine["policies"] == ["nightly-a"]
    theirs = {s["id"]: s for s in api.get("/v1/servers", api.b.tokens["reader"]).json()["servers"]}
    assert api.a.server_id not in theirs
    assert theirs[api.b.server_id]["protected"] is False and theirs[api.b.server_id]["policies"] == []


def test_a_project_reads_the_policies_that_back_it_up(api, devcloud):
    mine = api.get("/v1/policies", api.a.tokens["reader"]).json()["policies"]
    assert [(p["name"], p["project_id"], p["servers"]) for p in mine] == [("nightly-a", api.a.id, ["sv-api-a"]),
                                                                        ("opt-in-a", api.a.id, [])]
    assert "os_cloud" not in mine[0]
    assert api.get("/v1/policies", api.b.tokens["member"]).json()["policies"] == []
    every = {p["name"]: p for p in api.get("/v1/policies", api.admin_token, all_projects="1").json()["policies"]}
    assert every["admin-project"]["project_id"] == devcloud.connect().current_project_id
    assert every["nightly-a"]["project_id"] == api.a.id


def test_usage_is_per_project(api):
    a = api.get("/v1/usage", api.a.tokens["reader"]).json()["usage"]
    assert [u["project_id"] for u in a] == [api.a.id]
    assert a[0]["backups"] == 1 and a[0]["bytes_stored"] > 0
    every = {u["project_id"]: u for u in api.get("/v1/usage", api.admin_token, all_projects="1").json()["usage"]}
    assert every[api.a.id] == a[0]
    assert every[api.b.id]["backups"] == 1


def test_the_admin_sees_every_project(api):
    listed = _ids(api.get("/v1/backups", api.admin_token, all_projects="1").json()["backups"], "backup_id")
    assert {api.a.backup_id, api.b.backup_id} <= listed
    one = api.get("/v1/backups", api.admin_token, project_id=api.b.id).json()["backups"]
    assert _ids(one, "backup_id") == {api.b.backup_id}
    shown = api.get(f"/v1/backups/{api.b.backup_id}", api.admin_token, project_id=api.b.id)
    assert shown.status_code == 200


@pytest.mark.parametrize("params", [{"all_projects": "1"}, {"project_id": "other"}])
def test_a_member_cannot_widen_the_scope(api, params):
    params = {k: (api.b.id if v == "other" else v) for k, v in params.items()}
    reply = api.get("/v1/backups", api.a.tokens["member"], **params)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == 403 and reply.json()["error"]["fix"]


def test_a_forged_token_is_401(api):
    forged = api.a.tokens["member"][:-8] + "AAAAAAAA"
    for token in (forged, "gAAAAA" + secrets.token_urlsafe(150), None):
        reply = api.get("/v1/backups", token)
        assert reply.status_code == 401
        assert reply.json()["error"]["title"] == "Unauthorized"
        assert "Keystone uri=" in reply.headers["WWW-Authenticate"]


def test_a_revoked_token_is_401(api):
    """Keystone's tokens here live 12 h: a revoked one is refused the way an expired one is."""
    name = f"{api.a.name.replace('sv-api-a', 'sv-api-a-reader')}"
    token = api.new_token(name, api.a.id)
    requests.delete(api.auth_url + "/auth/tokens", timeout=60,
                    headers={"X-Auth-Token": api.admin_token, "X-Subject-Token": token}).raise_for_status()
    assert api.get("/v1/backups", token).status_code == 401


def test_an_operators_policy_file_changes_the_rules_without_a_restart(api):
    reader, member = api.a.tokens["reader"], api.a.tokens["member"]
    assert api.get("/v1/jobs", reader).status_code == 200
    api.policy_file.write_text('"stackvault:job:list": "rule:project_member or rule:admin"\n')
    try:
        deadline = time.monotonic() + 30
        while api.get("/v1/jobs", reader).status_code != 403:  # read again when the file changes
            assert time.monotonic() < deadline, "the policy file was not applied within 30 s"
            time.sleep(0.5)
        assert api.get("/v1/jobs", member).status_code == 200
        assert api.get("/v1/backups", reader).status_code == 200
    finally:
        api.policy_file.write_text("# the defaults\n")


def test_a_member_opts_their_server_into_a_policy_by_metadata(api):
    path = f"/v1/servers/{api.a.server_id}/policies/opt-in-a"
    assert api.put(path, api.a.tokens["reader"]).status_code == 403
    assert api.put(path, api.b.tokens["member"]).status_code == 404  # not b's server
    theirs = api.put(f"/v1/servers/{api.b.server_id}/policies/opt-in-a", api.b.tokens["member"])
    assert theirs.status_code == 404 and "no enabled policy 'opt-in-a'" in theirs.json()["error"]["message"]
    by_name = api.put(f"/v1/servers/{api.a.server_id}/policies/nightly-a", api.a.tokens["member"])
    assert by_name.status_code == 409 and by_name.json()["error"]["fix"]

    done = api.put(path, api.a.tokens["member"])
    assert done.status_code == 200, done.text
    assert done.json()["server"]["metadata"]["backup"] == "yes"
    servers = {s["id"]: s for s in api.get("/v1/servers", api.a.tokens["reader"]).json()["servers"]}
    assert servers[api.a.server_id]["policies"] == ["nightly-a", "opt-in-a"]


def test_a_member_starts_a_backup_of_their_own_server_only(api):
    assert api.post(f"/v1/servers/{api.a.server_id}/backups", api.a.tokens["reader"]).status_code == 403
    theirs = api.post(f"/v1/servers/{api.b.server_id}/backups", api.a.tokens["member"])
    assert theirs.status_code == 404
    assert theirs.json()["error"]["message"] == \
        api.post("/v1/servers/no-such-server/backups", api.a.tokens["member"]).json()["error"]["message"] \
        .replace("no-such-server", api.b.server_id)

    started = api.post(f"/v1/servers/{api.a.server_id}/backups", api.a.tokens["member"], level="full")
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 300
    while True:
        servers = {s["id"]: s for s in api.get("/v1/servers", api.a.tokens["reader"]).json()["servers"]}
        last = servers[api.a.server_id]["last_backup"]
        if last["backup_id"] != api.a.backup_id:
            break
        assert time.monotonic() < deadline, "the backup started through the API did not finish within 300 s"
        time.sleep(2)
    assert last["level"] == "full" and last["status"] in ("success", "warning")
    assert last["backup_id"] in _ids(api.get("/v1/backups", api.a.tokens["member"]).json()["backups"], "backup_id")
    assert last["backup_id"] not in _ids(api.get("/v1/backups", api.b.tokens["member"]).json()["backups"],
                                         "backup_id")
