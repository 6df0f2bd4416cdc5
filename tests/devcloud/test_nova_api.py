"""The emulated Nova and Neutron answer the compute and network APIs as the real services do:
version discovery, microversions, Nova's error bodies, seeded flavors/networks, keypairs, ports."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from devcloud.nova.testing import cli_json

pytestmark = [pytest.mark.devcloud]


def http(url: str, token: str | None = None, method: str = "GET", body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    hdrs = dict(headers or {})
    if token:
        hdrs["X-Auth-Token"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, dict(exc.headers), json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def token(devcloud) -> str:
    return devcloud.openstack("token", "issue", "-f", "value", "-c", "id").stdout.strip()


def test_version_documents_need_no_token_and_advertise_microversions(devcloud):
    base = devcloud.ctx.public_url("nova")
    status, _, root = http(base + "/")
    assert status == 200
    v21 = next(v for v in root["versions"] if v["id"] == "v2.1")
    assert v21["status"] == "CURRENT" and v21["min_version"] == "2.1"
    status, _, doc = http(base + "/v2.1")
    assert status == 200 and doc["version"]["version"] == v21["version"]


def test_microversion_is_echoed_and_out_of_range_is_406(devcloud, token):
    base = devcloud.ctx.public_url("nova") + "/v2.1"
    status, headers, _ = http(base + "/flavors", token,
                              headers={"OpenStack-API-Version": "compute 2.61"})
    assert status == 200
    assert headers["OpenStack-API-Version"] == "compute 2.61"
    assert headers["X-OpenStack-Nova-API-Version"] == "2.61"
    status, _, body = http(base + "/flavors", token,
                           headers={"X-OpenStack-Nova-API-Version": "2.999"})
    assert status == 406
    assert "is not supported by the API" in body["computeFault" if "computeFault" in body
                                                 else next(iter(body))]["message"]


def test_no_token_is_401_and_unknown_server_is_nova_404(devcloud, token):
    base = devcloud.ctx.public_url("nova") + "/v2.1"
    assert http(base + "/servers")[0] == 401
    status, _, body = http(base + "/servers/00000000-0000-0000-0000-000000000000", token)
    assert status == 404
    assert body == {"itemNotFound": {"code": 404, "message": "Instance 00000000-0000-0000-0000-"
                                                             "000000000000 could not be found."}}


def test_seeded_flavors_carry_extra_specs(devcloud):
    flavor = cli_json(devcloud, "flavor", "show", "m1.tiny")
    assert flavor["ram"] == 512 and flavor["vcpus"] == 1 and flavor["disk"] == 1
    assert flavor["properties"] == {"hw_rng:allowed": "True"}
    names = {f["Name"] for f in cli_json(devcloud, "flavor", "list")}
    assert {"m1.tiny", "m1.small", "m1.medium"} <= names


def test_private_network_subnet_and_default_security_group(devcloud):
    nets = {n["Name"]: n for n in cli_json(devcloud, "network", "list")}
    assert "private" in nets
    subnet = cli_json(devcloud, "subnet", "show", nets["private"]["Subnets"][0]
                      if isinstance(nets["private"]["Subnets"], list)
                      else nets["private"]["Subnets"])
    assert subnet["cidr"] == "10.0.0.0/24"
    groups = [g["Name"] for g in cli_json(devcloud, "security", "group", "list")]
    assert "default" in groups


def test_port_create_allocates_a_fixed_ip_and_delete_frees_it(devcloud):
    port = cli_json(devcloud, "port", "create", "--network", "private", "test-port")
    try:
        ip = port["fixed_ips"][0]["ip_address"]
        assert ip.startswith("10.0.0.")
        ports = cli_json(devcloud, "port", "list", "--network", "private")
        assert port["id"] in {p["ID"] for p in ports}
    finally:
        devcloud.openstack("port", "delete", port["id"])
    assert port["id"] not in {p["ID"] for p in cli_json(devcloud, "port", "list")}


def test_keypair_import_show_delete(devcloud):
    public = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDBWLVBrdYcExLIfn6g5iUl8LXS95Iw2ZwdtHd4Mv7vw "
              "test@devcloud")
    path = devcloud.state_dir / "test-key.pub"
    path.write_text(public + "\n")
    kp = cli_json(devcloud, "keypair", "create", "--public-key", str(path), "test-kp")
    try:
        assert kp["name"] == "test-kp" and kp["fingerprint"].count(":") == 15
        assert "test-kp" in {k["Name"] for k in cli_json(devcloud, "keypair", "list")}
        dup = devcloud.openstack("keypair", "create", "--public-key", str(path), "test-kp",
                                 check=False)
        assert dup.returncode != 0 and "already exists" in dup.stderr
    finally:
        devcloud.openstack("keypair", "delete", "test-kp")


def test_limits_and_availability_zones(devcloud):
    zones = cli_json(devcloud, "availability", "zone", "list", "--compute")
    assert "nova" in {z["Zone Name"] for z in zones}  # admin also sees "internal", as in Nova
    limits = cli_json(devcloud, "limits", "show", "--absolute")
    values = {item["Name"]: item["Value"] for item in limits}
    assert values.get("instances", values.get("maxTotalInstances")) == 10


def test_state_survives_a_restart_of_nova(devcloud):
    import os
    import signal
    import time

    from devcloud.nova import launch

    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDBWLVBrdYcExLIfn6g5iUl8LXS95Iw2ZwdtHd4Mv7vw k"
    path = devcloud.state_dir / "restart-key.pub"
    path.write_text(public + "\n")
    devcloud.openstack("keypair", "create", "--public-key", str(path), "restart-kp")
    try:
        before = {s["ID"]: s["Status"] for s in cli_json(devcloud, "server", "list")}
        pid = devcloud.ctx.pid("nova")
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while devcloud.ctx.pid("nova") == pid and time.monotonic() < deadline:
            time.sleep(0.2)
        launch.start(devcloud.ctx)
        assert devcloud.ctx.pid("nova") not in (None, pid)
        after = {s["ID"]: s["Status"] for s in cli_json(devcloud, "server", "list")}
        assert after == before
        assert "restart-kp" in {k["Name"] for k in cli_json(devcloud, "keypair", "list")}
    finally:
        devcloud.openstack("keypair", "delete", "restart-kp")
