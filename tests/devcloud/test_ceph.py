"""The dev cloud's Ceph (`devcloud up`, the default), as Cinder and a backup proxy meet it.

Real parts only: Debian's ceph-mon and ceph-osd, Cinder's own RBD driver behind the real API and
`openstack` CLI, librbd (Debian's bindings, in this process) and the `rbd` CLI. Data a guest would
write goes straight into the RBD image with librbd as client.admin (guests on `ceph` volumes are
tests/devcloud/test_nova_rbd.py); everything a backup proxy does uses the read-only `client.stackvault` keyring.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devcloud import ceph, processes, rest
from devcloud.context import REPO_ROOT
from devcloud.pytest_plugin import status_json

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture
def admin_ioctx(devcloud_ceph):
    """The pool as client.admin: writes what a guest would write through its disk."""
    cluster = ceph.connect(devcloud_ceph.state_dir, "admin")
    try:
        with cluster.open_ioctx(ceph.POOL) as ioctx:
            yield ioctx
    finally:
        cluster.shutdown()


@pytest.fixture
def proxy_ioctx(devcloud_ceph):
    """The pool as the backup proxy's read-only user."""
    cluster = ceph.connect(devcloud_ceph.state_dir, ceph.PROXY_USER)
    try:
        with cluster.open_ioctx(ceph.POOL) as ioctx:
            yield ioctx
    finally:
        cluster.shutdown()


def rbd_cli(dc, *args: str, user: str = ceph.PROXY_USER,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """The `rbd` CLI with the cluster's ceph.conf; the keyring is found by user name."""
    return subprocess.run(["rbd", "-c", str(ceph.conf_path(dc.state_dir)), "--id", user, *args],
                          capture_output=True, text=True, check=check, timeout=60)


class Cinder:
    """Cinder's API over plain HTTP, as admin. The `openstack` CLI costs a Python start (1-2.5 s
    here) per call; it is used where the command itself is under test."""

    def __init__(self, dc):
        ctx = dc.ctx
        self.token, body = rest.password_token(ctx.auth_url(), "admin", ctx.admin_password, "admin")
        self.base = f"{ctx.public_url('cinder')}/v3/{body['project']['id']}"

    def call(self, method: str, path: str, body: dict | None = None):
        return rest.request(method, f"{self.base}/{path}", token=self.token, body=body)[2]

    def wait(self, kind: str, ident: str, want: str = "available", timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.call("GET", f"{kind}s/{ident}")[kind]
            if shown["status"] == want:
                return shown
            assert not shown["status"].startswith("error"), shown
            assert time.monotonic() < deadline, f"{kind} {ident} still {shown['status']}"
            time.sleep(0.2)

    def create_volume(self, name: str, **fields: str) -> dict:
        body = {"volume": {"size": 1, "name": name, "volume_type": "ceph", **fields}}
        return self.wait("volume", self.call("POST", "volumes", body)["volume"]["id"])

    def create_snapshot(self, volume_id: str, name: str) -> dict:
        body = {"snapshot": {"volume_id": volume_id, "name": name}}
        return self.wait("snapshot", self.call("POST", "snapshots", body)["snapshot"]["id"])

    def delete(self, kind: str, ident: str) -> None:
        self.call("DELETE", f"{kind}s/{ident}")


def write(ioctx, image: str, offset: int, data: bytes) -> None:
    import rbd  # importable once ceph.connect put Debian's bindings on the path

    with rbd.Image(ioctx, image) as img:
        img.write(data, offset)
        img.flush()


def read(ioctx, image: str, offset: int, length: int, snapshot: str | None = None) -> bytes:
    import rbd

    with rbd.Image(ioctx, image, snapshot=snapshot, read_only=True) as img:
        return img.read(offset, length)


def covered(extents: list[tuple[int, int]], offset: int, length: int) -> bool:
    """True if [offset, offset + length) lies inside the union of the extents."""
    pos, end = offset, offset + length
    for start, size in sorted(extents):
        if start <= pos < start + size:
            pos = start + size
        if pos >= end:
            return True
    return pos >= end


def healthy(dc, timeout: float = 90) -> dict:
    """The cluster's status once it says HEALTH_OK. A warning that a loaded machine raises for a while
    (slow operations, a daemon that just started) may come and go; one that stays fails, naming it."""
    deadline = time.monotonic() + timeout
    while True:
        report = status_json(dc)["ceph"]
        if report["health"] == "HEALTH_OK" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert report["health"] == "HEALTH_OK", report.get("health_checks")
    return report


def test_status_json_names_the_cluster_its_pool_and_the_proxy_keyring(devcloud_ceph):
    report = healthy(devcloud_ceph)
    assert all(d["running"] for d in report["daemons"].values())
    [pool] = report["pools"]
    assert (pool["name"], pool["size"], pool["application"]) == ("volumes", 1, ["rbd"])
    conf = Path(report["conf"]).read_text()
    assert f"fsid = {report['fsid']}" in conf and f"mon host = {report['mon_host']}" in conf
    assert report["mon_host"].startswith("[v2:127.0.0.1:")
    for user in ("admin", "cinder", "stackvault"):
        keyring = Path(report["keyrings"][user])
        assert f"[client.{user}]" in keyring.read_text()
        assert keyring.stat().st_mode & 0o077 == 0
    assert report["proxy_user"] == "stackvault"


def test_volume_type_ceph_makes_an_rbd_image_while_untyped_volumes_stay_files(devcloud_ceph):
    cinder = Cinder(devcloud_ceph)

    def cli_create(*args: str) -> dict:
        out = devcloud_ceph.openstack("volume", "create", "--size", "1", *args, "-f", "json")
        return cinder.wait("volume", json.loads(out.stdout)["id"])

    on_ceph = cli_create("--type", "ceph", "on-ceph")
    on_files = cli_create("on-files")
    try:
        assert on_ceph["os-vol-host-attr:host"] == "devcloud@ceph#ceph"
        image = f"volume-{on_ceph['id']}"
        assert image in json.loads(rbd_cli(devcloud_ceph, "ls", "--format", "json",
                                           ceph.POOL).stdout)
        info = json.loads(rbd_cli(devcloud_ceph, "info", "--format", "json",
                                  f"{ceph.POOL}/{image}").stdout)
        assert info["size"] == GiB
        # Changed-block backups rest on these: exact diffs and answers from the object map.
        assert {"object-map", "fast-diff"} <= set(info["features"])

        assert on_files["os-vol-host-attr:host"] == "devcloud@sparse#sparse"
        assert (devcloud_ceph.state_dir / "cinder" / "volumes" / f"volume-{on_files['id']}").exists()
    finally:
        cinder.delete("volume", on_ceph["id"])
        cinder.delete("volume", on_files["id"])


def test_volume_from_a_cinder_snapshot_holds_the_bytes_of_that_snapshot(
        devcloud_ceph, admin_ioctx, proxy_ioctx):
    cinder = Cinder(devcloud_ceph)
    vol = cinder.create_volume("snap-src")
    image = f"volume-{vol['id']}"
    before, after = os.urandom(3 * MiB), os.urandom(3 * MiB)
    offset = 5 * MiB + 4096  # spans objects, not object-aligned
    write(admin_ioctx, image, offset, before)
    snap = cinder.create_snapshot(vol["id"], "snap-1")
    write(admin_ioctx, image, offset, after)  # the guest goes on writing

    clone = cinder.create_volume("from-snap", snapshot_id=snap["id"])
    assert clone["os-vol-host-attr:host"] == "devcloud@ceph#ceph"
    clone_image = f"volume-{clone['id']}"
    assert read(proxy_ioctx, clone_image, offset, len(before)) == before
    assert read(proxy_ioctx, image, offset, len(after)) == after
    assert read(proxy_ioctx, image, offset, len(before), snapshot=f"snapshot-{snap['id']}") == before
    cinder.delete("volume", clone["id"])


def test_rbd_diff_between_two_cinder_snapshots_covers_scattered_writes(
        devcloud_ceph, admin_ioctx, proxy_ioctx):
    cinder = Cinder(devcloud_ceph)
    vol = cinder.create_volume("diffed")
    image = f"volume-{vol['id']}"
    write(admin_ioctx, image, 0, os.urandom(16 * MiB))
    first = cinder.create_snapshot(vol["id"], "diff-1")
    rng = random.Random(7)
    writes = [(rng.randrange(0, 16 * MiB // 4096 - 16) * 4096, 64 * 1024) for _ in range(30)]
    # and a few into objects that did not exist at the first snapshot
    writes += [(rng.randrange(64 * MiB // 4096, GiB // 4096 - 16) * 4096, 64 * 1024)
               for _ in range(5)]
    for offset, length in writes:
        write(admin_ioctx, image, offset, os.urandom(length))
    second = cinder.create_snapshot(vol["id"], "diff-2")

    out = rbd_cli(devcloud_ceph, "diff", "--format", "json", "--from-snap",
                  f"snapshot-{first['id']}", f"{ceph.POOL}/{image}@snapshot-{second['id']}")
    extents = [(e["offset"], e["length"]) for e in json.loads(out.stdout)]
    # librbd's diff is exact inside objects that existed at the first snapshot and runs from the
    # object start up to the highest written byte in new ones: it covers the writes, and is
    # far smaller than the image.
    assert all(covered(extents, o, n) for o, n in writes)
    assert sum(n for _, n in extents) < 5 * 4 * MiB + 30 * 64 * 1024

    import rbd

    found: list[tuple[int, int]] = []
    with rbd.Image(proxy_ioctx, image, snapshot=f"snapshot-{second['id']}",
                   read_only=True) as img:
        img.diff_iterate(0, img.size(), f"snapshot-{first['id']}",
                         lambda off, n, exists: found.append((off, n)))
    assert sorted(found) == sorted(extents)


def test_the_proxy_keyring_reads_images_but_cannot_change_anything(
        devcloud_ceph, admin_ioctx, proxy_ioctx):
    import rados
    import rbd

    cinder = Cinder(devcloud_ceph)
    vol = cinder.create_volume("read-only")
    image = f"volume-{vol['id']}"
    write(admin_ioctx, image, 0, b"guest data" * 100)
    assert read(proxy_ioctx, image, 0, 1000) == b"guest data" * 100

    with pytest.raises(rbd.PermissionError):
        rbd.Image(proxy_ioctx, image)  # a writable open must register a watch: refused
    with pytest.raises(rados.PermissionError):
        proxy_ioctx.write_full(image.replace("volume-", "rbd_data."), b"x")
    made = rbd_cli(devcloud_ceph, "create", "--size", "1M", f"{ceph.POOL}/intruder", check=False)
    assert made.returncode != 0 and "Operation not permitted" in made.stderr
    removed = rbd_cli(devcloud_ceph, "rm", f"{ceph.POOL}/{image}", check=False)
    assert removed.returncode != 0
    assert read(proxy_ioctx, image, 0, 1000) == b"guest data" * 100
    cinder.delete("volume", vol["id"])


def ceph_processes(state_dir: Path) -> list[int]:
    """Live ceph-mon / ceph-osd processes of this cloud (found by marker or by command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and Path(cmdline[0].decode(errors="replace")).name in (ceph.MON, ceph.OSD) \
                and processes.belongs_to(int(entry.name), state_dir):
            found.append(int(entry.name))
    return found


def test_down_stops_every_ceph_process_and_up_resumes_with_the_data(devcloud_ceph):
    """Last in this file: it stops and restarts the cloud (the fixture's cloud stays usable)."""
    state = devcloud_ceph.state_dir
    cinder = Cinder(devcloud_ceph)
    vol = cinder.create_volume("kept")
    image = f"volume-{vol['id']}"
    data = os.urandom(MiB)
    cluster = ceph.connect(state)
    with cluster.open_ioctx(ceph.POOL) as ioctx:
        write(ioctx, image, 7 * MiB, data)
    cluster.shutdown()
    assert ceph_processes(state)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devcloud", "--state-dir", str(state), *args],
                              capture_output=True, text=True, check=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})

    cli("down")
    assert ceph_processes(state) == []
    assert not processes.marked_pids(state)
    assert not any(d["running"] for d in status_json(devcloud_ceph)["ceph"]["daemons"].values())

    cli("up", "--skip", ",".join(sorted(devcloud_ceph.skip)))
    healthy(devcloud_ceph)
    cluster = ceph.connect(state, ceph.PROXY_USER)
    with cluster.open_ioctx(ceph.POOL) as ioctx:
        assert read(ioctx, image, 7 * MiB, MiB) == data
    cluster.shutdown()
    cinder.delete("volume", vol["id"])
