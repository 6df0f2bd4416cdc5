"""The API without a cloud: health of a real repository, OpenStack-style errors, the published OpenAPI
document covering every route, and `[api]` settings checked as the rest of the config is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackvault.api.app import create_app
from stackvault.config import load_settings
from stackvault.errors import UsageError


def test_health_answers_without_a_token(client):
    reply = client.get("/v1/health")
    assert reply.status_code == 200
    assert reply.json["status"] == "ok"


def test_health_names_a_missing_repository_and_its_fix(tmp_path: Path):
    app = create_app(load_settings(None, repo=str(tmp_path / "nothing"), workdir=str(tmp_path / "w")),
                     authenticate=False)
    reply = app.test_client().get("/v1/health")
    assert reply.status_code == 503
    error = reply.json["error"]
    assert error["code"] == 503 and "no stackvault repository" in error["message"]
    assert "stackvault init" in error["fix"]


@pytest.mark.parametrize("path", ["/v1/backups", "/v1/backups/abc", "/v1/jobs", "/v1/jobs/abc", "/v1/servers",
                                  "/v1/usage", "/v1/policies"])
def test_every_resource_refuses_a_request_without_a_token(client, path):
    reply = client.get(path)
    assert reply.status_code == 401
    assert reply.json["error"]["title"] == "Unauthorized"
    assert "X-Auth-Token" in reply.json["error"]["fix"]


def test_starting_a_backup_refuses_a_request_without_a_token(client):
    reply = client.post("/v1/servers/any/backups", json={"level": "full"})
    assert reply.status_code == 401


def test_an_unknown_path_is_an_openstack_error_body(client):
    reply = client.get("/v1/nothing-here")
    assert reply.status_code == 404
    assert reply.json["error"]["code"] == 404
    assert "openapi.json" in reply.json["error"]["fix"]


def test_the_openapi_document_describes_every_route(client):
    doc = client.get("/v1/openapi.json").json
    assert doc["openapi"].startswith("3.")
    app = client.application
    api_rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/v1/")]  # not the dashboard
    routes = {rule.rule.replace("<", "{").replace(">", "}") for rule in api_rules}
    assert set(doc["paths"]) == routes
    assert doc["security"] == [{"keystone": []}]  # a Keystone token, but for the public routes:
    public = {p for p, ops in doc["paths"].items() if any(op.get("security") == [] for op in ops.values())}
    assert public == {"/v1/health", "/v1/openapi.json"}
    for rule in api_rules:
        path = rule.rule.replace("<", "{").replace(">", "}")
        documented = {method.upper() for method in doc["paths"][path]}
        assert documented == rule.methods - {"HEAD", "OPTIONS"}, path
        for operation in doc["paths"][path].values():
            assert operation["responses"], f"{path} documents no response"


@pytest.mark.parametrize("listen", ["8779", "host:", ":80", "h:99999", "h:x"])
def test_a_bad_listen_address_is_one_error_line(tmp_path: Path, listen: str):
    config = tmp_path / "sv.toml"
    config.write_text(f'[api]\nlisten = "{listen}"\n')
    with pytest.raises(UsageError, match=r"api\.listen .* not HOST:PORT"):
        load_settings(str(config))


def test_api_settings_are_read(tmp_path: Path):
    config = tmp_path / "sv.toml"
    config.write_text('[api]\nlisten = "[::1]:9000"\nservice_cloud = "sv-service"\npolicy_file = "/etc/p.yaml"\n')
    api = load_settings(str(config)).api
    assert (api.listen, api.service_cloud, api.policy_file) == ("[::1]:9000", "sv-service", "/etc/p.yaml")


def _stackvault(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stackvault", "--repo", str(tmp_path / "repo"), "--workdir",
                           str(tmp_path / "work"), *args], capture_output=True, text=True, timeout=120)


def test_the_api_without_a_service_user_is_one_error_line(tmp_path: Path):
    _stackvault(tmp_path, "init", "--block-size", "64KiB").check_returncode()
    done = _stackvault(tmp_path, "api", "--listen", "127.0.0.1:0")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["stackvault: error: [api] service_cloud is not set (name the clouds.yaml "
                                        "entry of stackvault's service user in [api] service_cloud)"]


def test_a_missing_policy_file_is_one_error_line(tmp_path: Path):
    config = tmp_path / "sv.toml"
    config.write_text(f'[api]\nservice_cloud = "x"\npolicy_file = "{tmp_path / "nothing.yaml"}"\n')
    done = _stackvault(tmp_path, "--config", str(config), "api")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("stackvault: error: [api] policy_file ") and "is not a file" in line


def test_a_bad_listen_option_is_one_error_line(tmp_path: Path):
    done = _stackvault(tmp_path, "api", "--listen", "8779")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["stackvault: error: --listen is '8779', not HOST:PORT "
                                        '(write e.g. "127.0.0.1:8779")']
