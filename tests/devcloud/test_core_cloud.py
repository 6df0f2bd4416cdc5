"""The dev cloud's core as a user meets it: real Keystone and Glance behind the fault proxy,
driven through openstacksdk and the `openstack` CLI of the services venv, and `devcloud`
up/status/down/fault run as commands."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devcloud import processes
from devcloud.context import REPO_ROOT

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]

# An image with random content, created and checked in the services venv with openstacksdk.
SDK_ROUNDTRIP = r"""
import hashlib, json, sys, openstack
path, name = sys.argv[1], sys.argv[2]
conn = openstack.connect()
with open(path, "rb") as fh:
    image = conn.image.create_image(name=name, disk_format="raw", container_format="bare",
                                    data=fh)
image = conn.image.wait_for_status(conn.image.get_image(image.id), "active", wait=120)
digest = hashlib.sha256()
for chunk in conn.image.download_image(image, stream=True).iter_content(1 << 20):
    digest.update(chunk)
print(json.dumps({"id": image.id, "size": image.size, "sha256": digest.hexdigest()}))
conn.image.delete_image(image)
"""


def devcloud_cli(state_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devcloud", "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, check=check, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})


def token_for(devcloud) -> str:
    return devcloud.openstack("token", "issue", "-f", "value", "-c", "id").stdout.strip()


def http_get(url: str, token: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"X-Auth-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def raw_download(url: str, token: str) -> tuple[int, str]:
    """Bytes of the body received before the connection ended, and how it ended."""
    received = 0
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"X-Auth-Token": token}),
                                    timeout=60) as resp:
            while chunk := resp.read1(1 << 16):
                received += len(chunk)
    except (ConnectionResetError, http.client.IncompleteRead) as exc:
        received += len(getattr(exc, "partial", b""))
        return received, "reset"
    return received, "complete"


def test_status_json_lists_services_endpoints_and_clouds_yaml(devcloud):
    report = json.loads(devcloud_cli(devcloud.state_dir, "status", "--json").stdout)
    assert report["clouds_yaml"] == str(devcloud.clouds_yaml)
    assert report["cloud"] == "devcloud"
    assert Path(report["clouds_yaml"]).is_file()
    for name in ("keystone", "glance", "faultproxy"):
        assert report["services"][name]["running"], name
    assert report["services"]["keystone"]["url"] == devcloud.ctx.public_url("keystone")


def test_token_comes_from_keystone_through_the_catalog(devcloud):
    issued = json.loads(devcloud.openstack("token", "issue", "-f", "json").stdout)
    assert issued["id"] and issued["project_id"]
    catalog = json.loads(devcloud.openstack("catalog", "list", "-f", "json").stdout)
    types = {entry["Type"] for entry in catalog}
    assert {"identity", "image", "volumev3", "block-storage", "compute", "network"} <= types
    demo = devcloud.openstack("token", "issue", "-f", "value", "-c", "project_id",
                              cloud_name="devcloud-demo").stdout.strip()
    assert demo and demo != issued["project_id"]


def test_100mb_image_roundtrip_through_openstacksdk(devcloud, tmp_path):
    data = tmp_path / "random.img"
    with open(data, "wb") as fh:
        for _ in range(100):
            fh.write(os.urandom(1 << 20))
    want = hashlib.sha256(data.read_bytes()).hexdigest()
    out = devcloud.run_python(SDK_ROUNDTRIP, str(data), "core-roundtrip").stdout
    got = json.loads(out.splitlines()[-1])
    assert got["size"] == 100 << 20
    assert got["sha256"] == want


def test_connect_gives_an_openstacksdk_connection_to_the_cloud(devcloud):
    pytest.importorskip("openstack", reason="openstacksdk is not installed in this venv")
    conn = devcloud.connect()
    names = {image.name for image in conn.image.images()}
    assert {i["name"] for i in devcloud.status()["images"]} <= names
    assert conn.session.get_endpoint(service_type="image", interface="public") == \
        devcloud.ctx.public_url("glance")


def test_image_properties_with_the_openstack_cli(devcloud, tmp_path):
    small = tmp_path / "small.img"
    small.write_bytes(os.urandom(1 << 16))
    created = json.loads(devcloud.openstack(
        "image", "create", "--file", str(small), "--disk-format", "raw",
        "--container-format", "bare", "-f", "json", "core-props").stdout)
    try:
        devcloud.openstack("image", "set", "--property", "hw_qemu_guest_agent=yes",
                           created["id"])
        props = devcloud.openstack("image", "show", "-f", "value", "-c", "properties",
                                   created["id"]).stdout
        assert "'hw_qemu_guest_agent': 'yes'" in props
    finally:
        devcloud.openstack("image", "delete", created["id"], check=False)


def test_503_fault_is_seen_once_then_requests_succeed(devcloud):
    token = token_for(devcloud)
    url = devcloud.ctx.public_url("glance") + "/v2/images"
    devcloud_cli(devcloud.state_dir, "fault", "add", "glance", "--status", "503",
                 "--method", "GET", "--path-regex", "^/v2/images", "--count", "1")
    try:
        status, body = http_get(url, token)
        assert status == 503
        assert json.loads(body)["code"] == "503 Service Unavailable"
        status, body = http_get(url, token)
        assert status == 200 and "images" in json.loads(body)
    finally:
        devcloud_cli(devcloud.state_dir, "fault", "clear")


def test_dropped_download_fails_the_client_and_the_retry_succeeds(devcloud, tmp_path):
    blob = tmp_path / "drop.img"
    blob.write_bytes(os.urandom(8 << 20))
    image_id = json.loads(devcloud.openstack(
        "image", "create", "--file", str(blob), "--disk-format", "raw",
        "--container-format", "bare", "-f", "json", "core-drop").stdout)["id"]
    download = r"""
import hashlib, sys, openstack
conn = openstack.connect()
try:
    data = conn.image.download_image(conn.image.get_image(sys.argv[1])).content
    print("ok", hashlib.sha256(data).hexdigest())
except Exception as exc:
    print("failed", type(exc).__name__)
"""
    try:
        devcloud.add_fault("glance", "drop", 1 << 20, method="GET", path_regex="/file$", count=1)
        first = devcloud.run_python(download, image_id).stdout.split()
        second = devcloud.run_python(download, image_id).stdout.split()
        devcloud.add_fault("glance", "drop", 12345, method="GET", path_regex="/file$", count=1)
        received = raw_download(devcloud.ctx.public_url("glance") + f"/v2/images/{image_id}/file",
                                token_for(devcloud))
    finally:
        devcloud.clear_faults()
        devcloud.openstack("image", "delete", image_id, check=False)
    assert first[0] == "failed"
    assert second == ["ok", hashlib.sha256(blob.read_bytes()).hexdigest()]
    assert received == (12345, "reset")


def test_latency_fault_delays_the_request(devcloud):
    token = token_for(devcloud)
    devcloud.add_fault("glance", "latency", 1.5, path_regex="^/v2/images$", count=1)
    try:
        started = time.monotonic()
        status, _ = http_get(devcloud.ctx.public_url("glance") + "/v2/images", token)
        assert status == 200
        assert time.monotonic() - started >= 1.5
    finally:
        devcloud.clear_faults()


def test_up_again_restarts_nothing_and_prints_clouds_yaml(devcloud):
    pids = {n: devcloud.ctx.pid(n) for n in ("keystone", "glance", "faultproxy")}
    again = devcloud_cli(devcloud.state_dir, "up")
    assert again.stdout.strip().splitlines()[-1] == str(devcloud.clouds_yaml)
    assert {n: devcloud.ctx.pid(n) for n in pids} == pids


def test_down_leaves_no_process_and_up_brings_it_back():
    """On a cloud of its own (Keystone and Glance only), so the session's cloud stays up."""
    state = Path(tempfile.mkdtemp(prefix="t-down-", dir=REPO_ROOT / ".state"))
    try:
        up = devcloud_cli(state, "up", "--ports", "auto", "--skip", "images,cinder,nova")
        clouds_yaml = Path(up.stdout.strip().splitlines()[-1])
        assert clouds_yaml == state / "clouds.yaml" and clouds_yaml.is_file()
        report = json.loads(devcloud_cli(state, "status", "--json").stdout)
        assert report["services"]["keystone"]["running"]
        assert processes.marked_pids(state)

        devcloud_cli(state, "down")
        devcloud_cli(state, "down")  # a second down is a no-op
        assert not processes.marked_pids(state)
        assert not list((state / "run").glob("*.pid"))
        report = json.loads(devcloud_cli(state, "status", "--json").stdout)
        assert not any(s["running"] for s in report["services"].values())

        devcloud_cli(state, "up", "--skip", "images,cinder,nova")  # same ports, same data
        token = subprocess.run(
            [str(state / "venv" / "bin" / "openstack"), "token", "issue", "-f", "value", "-c", "id"],
            env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml), "OS_CLOUD": "devcloud"},
            capture_output=True, text=True, check=True).stdout.strip()
        assert token
    finally:
        processes.stop_all(state)
        shutil.rmtree(state, ignore_errors=True)
    assert not processes.marked_pids(state)
