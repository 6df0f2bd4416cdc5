"""`make demo`: stackvault's main job against the local dev cloud, with real QEMU guests.

Brings the dev cloud up (with its single-node Ceph), boots three servers (image-backed with and
without the guest agent, and one booted from a Cinder volume on Ceph RBD with a data volume), installs
stackvault's fsfreeze hook in the guests with an agent, writes data inside the guests, runs a Full
backup of all of them, changes the data, runs an Incremental, restores two servers to new servers,
boots them and reads the data back from inside the restored guests. Last, runs stackvault as a service:
a policy in the config, `stackvault server` taking its first scheduled run, `stackvault jobs` and the
Prometheus endpoint, then SIGTERM. Last, a file-level restore: a directory of a backup listed and one
file extracted (scripts/demo_files.py), its checksum against the guest's own. Exits non-zero if any
byte differs, the policy's run failed or the server did not stop cleanly.

What a newcomer should see: the RBD-backed disk's Incremental reads only the blocks Ceph lists as
changed (bytes read next to the disk's size), and the backups of the guests with the hook say
`Quiesce proof: verified` (the hook's marker, written as the guest froze, read from the backed-up
disk).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from demo_dashboard import start_dashboard  # noqa: E402 - beside this script
from demo_files import show_file_restore  # noqa: E402 - beside this script

from devcloud import cloud as devcloud_cloud  # noqa: E402 - after src/ is on sys.path
from devcloud.context import CloudContext  # noqa: E402 - after src/ is on sys.path
from devcloud.guest.hypervisor import Hypervisor  # noqa: E402 - after src/ is on sys.path
from stackvault.cloud.guest_hook import HOOK_PATH  # noqa: E402 - after src/ is on sys.path
from stackvault.progress import human_bytes  # noqa: E402 - after src/ is on sys.path
from stackvault.render import cloud_backup  # noqa: E402 - after src/ is on sys.path

OUT = Path(os.environ.get("DEMO_DIR", ROOT / "demo-out"))
STATE = Path(os.environ.get("DEMO_CLOUD", ROOT / ".state" / "demo"))
SV = str(ROOT / ".venv" / "bin" / "stackvault")


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def stackvault(*args: str, env: dict) -> dict:
    print("+ stackvault " + " ".join(args), flush=True)
    human = subprocess.run([SV, *args], env=env)
    if human.returncode != 0:
        raise SystemExit(f"demo: stackvault {' '.join(args)} failed (exit {human.returncode})")
    return {}


def stackvault_json(*args: str, env: dict) -> dict:
    out = subprocess.run([SV, "--json", *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"demo: stackvault {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main() -> int:
    say(f"the dev cloud (real Keystone, Glance, Cinder on files and on a single-node Ceph; emulated Nova over "
        f"QEMU guests) in {STATE}")
    # A cloud made before keeps its ports (`up` is idempotent); a new one takes free ports.
    ports = [] if (STATE / "config.json").exists() else ["--ports", "auto"]
    subprocess.run([str(ROOT / ".venv" / "bin" / "devcloud"), "--state-dir", str(STATE), "up", "--ceph", *ports],
                   check=True)
    ctx = CloudContext.load(STATE)
    status = devcloud_cloud.status(ctx)
    import openstack
    from openstack import config as os_config

    conn = openstack.connection.Connection(config=os_config.OpenStackConfig(
        config_files=[str(ctx.clouds_yaml)]).get_one(cloud="devcloud"))
    conn.block_storage.update_quota_set(conn.current_project_id, volumes=100, snapshots=100, gigabytes=1000)
    hv = Hypervisor(STATE / "nova" / "guests")
    net = conn.network.find_network("private").id
    flavor = conn.compute.find_flavor("m1.tiny").id

    say("three servers: image-backed with the guest agent, image-backed without, and one booted from a Cinder "
        "volume on Ceph RBD (volume type `ceph`) with a data volume")
    remove_earlier_run(conn)
    specs = {"demo-web": ("sv-agent", False), "demo-legacy": ("sv-noagent", False),
             "demo-db": ("sv-agent-quiesce", True)}
    servers = {}
    for name, (image, volume_backed) in specs.items():
        img = conn.image.find_image(image).id
        args = {"name": name, "flavor_id": flavor, "networks": [{"uuid": net}]}
        if volume_backed:  # Cinder's RBD driver clones the image into an RBD image of pool `volumes`
            root = conn.block_storage.create_volume(size=1, name=f"{name}-root", image_id=img, volume_type="ceph")
            conn.block_storage.wait_for_status(root, "available", failures=["error"], wait=300)
            args["block_device_mapping_v2"] = [{"boot_index": 0, "uuid": root.id, "source_type": "volume",
                                                "destination_type": "volume", "delete_on_termination": True}]
        else:
            args["image_id"] = img
        servers[name] = conn.compute.create_server(**args)
    for name in servers:
        servers[name] = conn.compute.wait_for_server(servers[name], wait=600)
        print(f"  {name}: {servers[name].status}")
    data_vol = conn.block_storage.create_volume(size=1, name="demo-db-data")
    conn.block_storage.wait_for_status(data_vol, "available", wait=300)
    conn.compute.create_volume_attachment(servers["demo-db"], volume=data_vol.id)
    conn.block_storage.wait_for_status(data_vol, "in-use", wait=300)

    agents = ("demo-web", "demo-db")
    for name in agents:
        hv.wait_agent(servers[name].id, timeout=600)  # TCG boots slowly on a busy machine

    say(f"stackvault's fsfreeze hook installed in {' and '.join(agents)} through their agent (`stackvault "
        f"guest-hook` > {HOOK_PATH}): each backup then proves the guest froze")
    hook = subprocess.run([SV, "guest-hook"], capture_output=True, check=True).stdout
    for name in agents:
        hv.guest_write_file(servers[name].id, HOOK_PATH, hook)
        code, _, err = hv.guest_exec(servers[name].id, ["/bin/chmod", "755", HOOK_PATH])
        if code != 0:
            raise SystemExit(f"demo: cannot install the hook in {name}: {err.decode().strip()}")

    def write_version(version: int) -> None:
        for name in agents:
            sid = servers[name].id
            hv.guest_write_file(sid, "/root/demo.txt", f"{name} data, version {version}\n".encode())
            hv.guest_exec(sid, ["/bin/sync"])
        sid = servers["demo-db"].id
        hv.guest_exec(sid, ["/bin/sh", "-c", f"echo 'data volume, version {version}' | dd of=/dev/vdb bs=512 seek=2048 "
                                             "conv=notrunc 2>/dev/null; sync"])

    say("data written inside the guests (through the QEMU guest agent)")
    write_version(1)

    OUT.mkdir(parents=True, exist_ok=True)
    config = OUT / "stackvault.toml"
    ceph = status["ceph"]  # the cluster a proxy reads RBD volumes from, as its read-only user
    config.write_text(f'repo = "{OUT / "repo"}"\nworkdir = "{OUT / "work"}"\n[cloud]\nos_cloud = "devcloud"\n'
                      f'proxy_server = "{status["proxy_server_id"]}"\ndevice_root = "{status["proxy_device_root"]}"\n'
                      f'parallel = 3\n[ceph]\nconf = "{ceph["conf"]}"\nclient = "client.{ceph["proxy_user"]}"\n'
                      f'keyring = "{ceph["keyrings"][ceph["proxy_user"]]}"\n'
                      f'volume_backends = {{ ceph = "{ceph["pool"]}" }}\n')
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(ctx.clouds_yaml), "STACKVAULT_CONFIG": str(config)}
    subprocess.run(["rm", "-rf", str(OUT / "repo"), str(OUT / "work")], check=True)
    stackvault("init", env=env)

    say("Full backup of every server, in parallel")
    stackvault("backup", "--server", "demo-*", "--level", "full", env=env)
    say("the guests change their data")
    write_version(2)
    say("Incremental backup: only the changed blocks are stored; the disk on Ceph is read only where it changed")
    print("+ stackvault backup --server demo-*", flush=True)
    report = stackvault_json("backup", "--server", "demo-*", env=env)
    print(cloud_backup(report))
    print_rbd_reads(report)
    stackvault("list", env=env)

    say("restore the newest backups of demo-web and demo-db to new servers")
    failures = 0
    for name in agents:
        latest = stackvault_json("list", "--server", name, env=env)["backups"][-1]["backup_id"]
        stackvault("restore", latest, "--to", f"server:{name}-restored", "--force", env=env)
        restored = conn.compute.find_server(f"{name}-restored")
        hv.wait_agent(restored.id, timeout=600)
        got = hv.guest_read_file(restored.id, "/root/demo.txt").decode()
        ok = got == f"{name} data, version 2\n"
        failures += not ok
        print(f"  {name}-restored reads /root/demo.txt: {got.strip()!r} {'OK' if ok else 'WRONG'}")
        if name == "demo-db":
            code, out, _ = hv.guest_exec(restored.id, ["/bin/sh", "-c", "dd if=/dev/vdb bs=512 skip=2048 count=1 "
                                                                         "2>/dev/null | head -1"])
            ok = out.decode().strip() == "data volume, version 2"
            failures += not ok
            print(f"  {name}-restored reads its data volume: {out.decode().strip()!r} {'OK' if ok else 'WRONG'}")
    stackvault("cleanup", "--dry-run", env=env)
    print(f"(the base snapshot kept for {servers['demo-db'].name}'s next Incremental stays until `stackvault "
          "cleanup --bases`; the next `make demo` releases it)")
    failures += not run_as_service(config, env)
    say("file-level restore: a directory of demo-web's newest backup listed and one file extracted, read in place")
    failures += not show_file_restore(SV, hv, servers["demo-web"], env, OUT)
    say("the web dashboard: the demo's servers, backups and jobs, and self-service restores")
    failures += not start_dashboard(SV, config, env, conn, ctx, OUT)
    say("demo finished" + (": every byte read back from the restored guests is right" if not failures
                           else " WITH ERRORS"))
    print(f"the cloud is still up: `.venv/bin/devcloud --state-dir {STATE} down` stops it")
    return 1 if failures else 0


def run_as_service(config: Path, env: dict) -> bool:
    """The last act: a policy in the config, `stackvault server` taking its first scheduled run, then
    what an operator watches (`stackvault jobs`, the run's items, the Prometheus endpoint) and SIGTERM.
    True when the run succeeded (or warned) and the server stopped cleanly."""
    second = (datetime.now().second + 15) % 60  # the first slot comes a few seconds after the server starts
    policy = (f'[policy.demo]\nschedule = "* * * * * {second}"   # every minute at second {second} (a sixth field, '
              'last, gives seconds)\nservers = ["demo-web", "demo-legacy"]\nretention = { keep_last = 3 }\n'
              'verify_sample_percent = 10\n')
    config.write_text(config.read_text() + "\n" + policy)
    say("stackvault as a service: a policy in the config, run by `stackvault server` when it is due")
    print(policy, end="")
    with socket.socket() as probe:  # a free port for the metrics endpoint
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    log = config.with_name("server.log")
    print(f"+ stackvault server --metrics {address} &      (its log: {log})", flush=True)
    begun = datetime.now().astimezone()
    with log.open("w") as out:
        server = subprocess.Popen([SV, "server", "--metrics", address], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        run = wait_for_policy_run("demo", begun, server, env, deadline=time.monotonic() + 240)
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
            metrics = response.read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=300)  # an item under way would finish first
    print(f"the first scheduled run ended: {run['status']} ({run['duration_s']:.0f} s)")
    since_run = [j for j in stackvault_json("jobs", env=env)["jobs"] if j["started"] >= run["started"]]
    stackvault("jobs", "--last", str(len(since_run)), env=env)  # the run's job, its backups and maintenance
    stackvault("jobs", "show", run["job_id"][:12], env=env)
    print(f"+ curl -s http://{address}/metrics | grep -E 'last_success_(timestamp|read|stored|consistency)'"
          " | grep demo-web")
    wanted = ("stackvault_backup_last_success_timestamp_seconds", "stackvault_backup_last_success_read_bytes",
              "stackvault_backup_last_success_stored_bytes", "stackvault_backup_last_success_consistency")
    for line in metrics.splitlines():
        if line.startswith(wanted) and 'name="demo-web"' in line:
            print("  " + line)
    lines = log.read_text().splitlines()
    print(f"SIGTERM: the server exited {code}; its last line: {lines[-1] if lines else ''}")
    return run["status"] in ("success", "warning") and code == 0


def wait_for_policy_run(policy: str, begun: datetime, server: subprocess.Popen, env: dict, deadline: float) -> dict:
    """The policy's first run since `begun` as `stackvault jobs --json` lists it, once it has ended."""
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"demo: stackvault server exited {server.returncode} (see its log)")
        ended = [j for j in stackvault_json("jobs", "--kind", "policy", "--policy", policy, env=env)["jobs"]
                 if j["status"] != "running" and datetime.fromisoformat(j["started"]) >= begun]
        if ended:
            return ended[0]
        time.sleep(1)
    raise SystemExit(f"demo: the policy {policy!r} had not run after 4 minutes (see the server's log)")


def print_rbd_reads(report: dict) -> None:
    """One line per disk read from Ceph: what the changed-block list made the Incremental read, against
    what a full read of the disk would have read."""
    for server in report["servers"]:
        for disk in server.get("disks", []):
            read = disk.get("read") or {}
            if not read.get("rbd"):
                continue
            how = (f"the {read['blocks_listed']} changed blocks Ceph listed and {read['sample_blocks']} sampled"
                   if read.get("path") == "changed_blocks" else f"in full: {read.get('why')}")
            print(f"  {server['name']} {disk['name']} on Ceph ({read['path']}): read {human_bytes(disk['bytes_read'])} "
                  f"of a {human_bytes(disk['size'])} disk, {how}")


def remove_earlier_run(conn) -> None:
    """The servers and volumes of an earlier run, the base snapshots its backups kept first (Cinder
    deletes no volume that has snapshots)."""
    earlier = {v.id for v in conn.block_storage.volumes(details=True) if (v.name or "").startswith("demo-")}
    for snap in conn.block_storage.snapshots(details=True):
        if snap.volume_id in earlier and "stackvault_base" in (snap.metadata or {}):
            conn.block_storage.delete_snapshot(snap)
            conn.block_storage.wait_for_delete(snap, wait=300)
    for old in conn.compute.servers():
        if old.name.startswith("demo-"):
            conn.compute.delete_server(old)
            conn.compute.wait_for_delete(old, wait=300)
    for vol in conn.block_storage.volumes(details=True):
        if vol.id in earlier and vol.status in ("available", "error"):
            conn.block_storage.delete_volume(vol)
            conn.block_storage.wait_for_delete(vol, wait=300)


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f} s)")
    sys.exit(code)
