"""Several proxies splitting one selection of servers: by shard (K of N) and by availability zone.

What an operator checks: three proxies run at once with shards 1/3, 2/3 and 3/3 back up disjoint sets
of servers whose union is every selected server; each report says its share and how many servers it
left to the others; an availability-zone filter backs up exactly that zone's servers.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .conftest import CloudUser

pytestmark = pytest.mark.devcloud


def _boot_in_zones(conn, made: list, prefix: str, zones: list[str]) -> dict[str, str]:
    """One server per entry of `zones`, booted at once; returns server name -> its availability zone."""
    img = conn.image.find_image("sv-noagent", ignore_missing=False)
    flavor = conn.compute.find_flavor("m1.tiny").id
    net = conn.network.find_network("private").id
    pending = [conn.compute.create_server(name=f"{prefix}-{n}", image_id=img.id, flavor_id=flavor,
                                          networks=[{"uuid": net}], availability_zone=zone)
               for n, zone in enumerate(zones)]
    made.extend(pending)
    servers = [conn.compute.wait_for_server(s, wait=300) for s in pending]
    return {s.name: s.availability_zone for s in servers}


def _proxy(user: CloudUser, root: Path) -> CloudUser:
    """Another proxy: its own working directory, the same repository, catalog and cloud as `user`.
    One server at a time each, so that three proxies on a small test machine do not time out snapshots."""
    proxy = CloudUser(root)
    proxy.repo, proxy.catalog_file, proxy.clouds_yaml = user.repo, user.catalog_file, user.clouds_yaml
    proxy.config = root / "stackvault.toml"
    proxy.config.write_text(user.config.read_text().replace("parallel = 2", "parallel = 1"))
    return proxy


@pytest.mark.slow  # three proxies back up every server of the project
def test_three_shards_back_up_disjoint_sets_covering_every_server(user, conn, cloud_objects, tmp_path):
    prefix = f"sh-{uuid.uuid4().hex[:6]}"
    zones = _boot_in_zones(conn, cloud_objects, prefix, ["az1", "az2"] * 3)
    assert sorted(zones.values()) == ["az1"] * 3 + ["az2"] * 3  # the cloud placed them where asked

    proxies = [_proxy(user, tmp_path / f"proxy{k}") for k in (1, 2, 3)]
    running = [p.popen("backup", "--server", f"{prefix}-*", "--level", "full", "--shard", f"{k}/3", "--wait", "120")
               for k, p in enumerate(proxies, 1)]
    reports = []
    for proc in running:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, out + err
        reports.append(json.loads(out))
    shares = [{s["name"] for s in r["servers"]} for r in reports]
    assert all(s["status"] == "success" for r in reports for s in r["servers"]), reports
    assert sum(len(s) for s in shares) == 6 and set().union(*shares) == set(zones)  # disjoint, and all of them
    for k, (report, share) in enumerate(zip(reports, shares, strict=True), 1):
        assert report["scope"] == {"shard": f"{k}/3", "servers_skipped": 6 - len(share), "volumes_skipped": 0}
    listed = {b["name"] for b in user.run("list").data["backups"]}
    assert listed == set(zones)  # one repository, one catalog: every server's backup is there once
    for k, share in enumerate(shares, 1):  # and each proxy can list its own share
        assert {b["name"] for b in user.run("list", "--shard", f"{k}/3").data["backups"]} == share
    assert {b["name"] for b in user.run("list", "--availability-zone", "az2").data["backups"]} == {
        n for n, z in zones.items() if z == "az2"}
    bad = user.run("list", "--shard", "4/3", json_out=False, expect=2)
    assert len(bad.error_lines()) == 1 and "--shard" in bad.error_lines()[0]

    again = proxies[1].run("backup", "--server", f"{prefix}-*", "--shard", "2/3").data  # the same share next time
    assert {s["name"] for s in again["servers"]} == shares[1]

    az1 = user.run("backup", "--server", f"{prefix}-*", "--availability-zone", "az1", json_out=False)
    assert "this proxy's share: availability zones az1; skipped 3 servers and 0 volumes of other proxies" \
        in az1.stdout, az1.describe()
    az1_json = user.run("backup", "--server", f"{prefix}-*", "--availability-zone", "az1").data
    assert {s["name"] for s in az1_json["servers"]} == {n for n, z in zones.items() if z == "az1"}
    assert az1_json["scope"] == {"availability_zones": ["az1"], "servers_skipped": 3, "volumes_skipped": 0}


def test_a_job_of_the_config_takes_its_own_share(user, conn, cloud_objects):
    prefix = f"shj-{uuid.uuid4().hex[:6]}"
    zones = _boot_in_zones(conn, cloud_objects, prefix, ["az1", "az2"])
    user.config.write_text(user.config.read_text() + 'availability_zones = ["az1"]\n' + f'''
[[jobs]]
name = "zone2"
servers = ["{prefix}-*"]
availability_zones = ["az2"]

[[jobs]]
name = "zone1"
servers = ["{prefix}-*"]
''')
    report = user.run("backup", "--job", "*").data
    assert {(s["job"], s["name"]) for s in report["servers"]} == {
        ("zone2", n) for n, z in zones.items() if z == "az2"} | {("zone1", n) for n, z in zones.items() if z == "az1"}
    assert [(s["job"], s["availability_zones"], s["servers_skipped"]) for s in report["scopes"]] == [
        ("zone2", ["az2"], 1), ("zone1", ["az1"], 1)]


def test_doctor_looks_at_this_proxys_share_only(user, conn, cloud_objects):
    prefix = f"shd-{uuid.uuid4().hex[:6]}"
    zones = _boot_in_zones(conn, cloud_objects, prefix, ["az1", "az2", "az1"])
    az1 = user.run("doctor", "--server", f"{prefix}-*", "--availability-zone", "az1").data
    assert {s["name"] for s in az1["servers"]} == {n for n, z in zones.items() if z == "az1"}
    shares = [{s["name"] for s in user.run("doctor", "--server", f"{prefix}-*", "--shard", f"{k}/2").data["servers"]}
              for k in (1, 2)]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(zones)
    backed_up = user.run("backup", "--server", f"{prefix}-*", "--shard", "1/2", "--level", "full").data
    assert {s["name"] for s in backed_up["servers"]} == shares[0]  # the doctor sees what this proxy backs up
