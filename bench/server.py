"""Server backup against the dev cloud: is an Incremental within 1.5x of one snapshot download?

Run with `.venv/bin/python bench/server.py [--size 1G]`.

The target: an Incremental of a server takes at most 1.5x the time of downloading its
snapshot once, and memory stays bounded. Every server backup takes a Nova snapshot
(`createImage` + wait) and downloads it from Glance, so the floor for any backup is
snapshot + one download; the ratio printed is Incremental / (snapshot + download).

What one run does:
1. brings up a fast-mode dev cloud in .state/bench-cloud and stops it at the end (a cloud already
   running there, or the one DEVCLOUD_STATE names, is reused and left running);
2. boots an image-backed server from `sv-noagent` and replaces its disk (the qcow2 under
   <state>/nova/instances/<id>/disk, not held open in fast mode) with a generated image of
   --size: 60% holes, 25% OS-like compressible data, 15% random (~40% data);
3. measures a Full backup, then separately a snapshot (openstacksdk, wait for active) and one
   streamed download of it to nowhere, then rewrites 1% of the disk in scattered 64 KiB extents
   and measures an Incremental: wall time, what stackvault reports, peak RSS (GNU time / polling);
   --rounds times (default 3), each round a fresh snapshot + download then a fresh change + Incremental,
   because on a shared machine one snapshot's time swings 2x from the next;
4. prints the table, each round's ratio and PASS/MISS for the median ratio against 1.5x; deletes the
   server and its images.

No raw-image variant: the dev cloud's snapshots are always qcow2 (as libvirt's are for qcow2
instance disks); stackvault streams them through its qcow2 stream reader, with no temporary copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import imagegen
from measure import PhaseResult, run_measured

TARGET = 1.5
MIX = {imagegen.HOLE: 0.60, imagegen.COMPRESSIBLE: 0.25, imagegen.RANDOM: 0.15}
SEED = 4


def log(msg: str) -> None:
    print(f"[bench-server {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def devcloud(state: Path, *args: str) -> str:
    exe = Path(sys.executable).parent / "devcloud"
    proc = subprocess.run([str(exe), "--state-dir", str(state), *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"devcloud {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def cloud_running(state: Path) -> bool:
    if not (state / "clouds.yaml").exists():
        return False
    status = json.loads(devcloud(state, "status", "--json"))
    return bool(status["services"].get("nova", {}).get("running"))


def cloud_up(state: Path, reuse: bool) -> dict:
    """Start the fast-mode cloud (unless reusing a running one) and return its `status --json`."""
    if not reuse:
        log(f"devcloud up --fast in {state}")
        devcloud(state, "up", "--fast", "--ports", "auto")
    status = json.loads(devcloud(state, "status", "--json"))
    if not status.get("fast"):
        raise SystemExit(f"the dev cloud in {state} is not in fast mode: the bench rewrites disk "
                         "files directly; start it with `devcloud up --fast` or unset DEVCLOUD_STATE")
    if not status["services"].get("nova", {}).get("running"):
        raise SystemExit(f"the dev cloud in {state} is not running: `devcloud --state-dir {state} up --fast`")
    return status


def boot(conn, name: str):
    img = conn.image.find_image("sv-noagent", ignore_missing=False)
    server = conn.compute.create_server(
        name=name, image_id=img.id, flavor_id=conn.compute.find_flavor("m1.tiny").id,
        networks=[{"uuid": conn.network.find_network("private").id}])
    return conn.compute.wait_for_server(server, wait=300)


def replace_disk(raw: Path, disk: Path) -> None:
    """Write the raw image over the server's qcow2 disk (what a guest filling its disk would leave)."""
    tmp = disk.with_suffix(".bench")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)], check=True)
    os.replace(tmp, disk)


def snapshot_and_download(conn, server) -> tuple[float, float, int, float]:
    """Seconds to create one snapshot (until active), seconds to stream it once, its size, and seconds
    to stream it again while hashing it as stackvault checks it against Glance (the gap between the two
    downloads is the cost of that check)."""
    t0 = time.monotonic()
    image = conn.compute.create_server_image(server, f"bench-snap-{uuid.uuid4().hex[:6]}")
    # Polled every 0.1 s here (the SDK's wait polls every 2 s): the floor must not include our latency.
    while (image := conn.image.get_image(image.id)).status != "active":
        if image.status in ("killed", "deleted") or time.monotonic() - t0 > 1800:
            raise SystemExit(f"snapshot image {image.id} of the bench server went {image.status}")
        time.sleep(0.1)
    t1 = time.monotonic()
    size = 0
    try:
        resp = conn.image.download_image(image, stream=True)
        for chunk in resp.iter_content(chunk_size=1 << 20):
            size += len(chunk)
        t2 = time.monotonic()
        digest = hashlib.new(image.hash_algo or "sha512")
        for chunk in conn.image.download_image(image, stream=True).iter_content(chunk_size=1 << 20):
            digest.update(chunk)
        t3 = time.monotonic()
    finally:
        conn.image.delete_image(image, ignore_missing=True)
    return t1 - t0, t2 - t1, size, t3 - t2


def stackvault(work: Path, env: dict, phase: str, *args: str) -> tuple[PhaseResult, dict]:
    exe = Path(sys.executable).parent / "stackvault"
    argv = [str(exe), "--json", *args]
    res, out = run_measured("stackvault", phase, argv, env=env, log_path=str(work / "stackvault.log"))
    return res, json.loads(out) if out.strip() else {}


def split(res: PhaseResult, out: dict) -> str:
    """The wall time as stackvault reports it: start-up, then the job = snapshot + fetch, then the engine."""
    item = out["servers"][0]
    job, engine = float(out.get("duration_s") or 0), float(item.get("duration_s") or 0)
    return (f"start/exit {res.wall_s - job:.2f} + snapshot&fetch {job - engine:.2f} + engine {engine:.2f}; "
            f"read {imagegen.human(item.get('bytes_read') or 0)}, "
            f"stored {imagegen.human(item.get('bytes_stored') or 0)}, "
            f"{item.get('blocks_changed')}/{item.get('blocks_total')} blocks changed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="server disk size (default 1G)")
    ap.add_argument("--block-size", default="512KiB", help="stackvault init --block-size")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (repository, logs, disk image)")
    ap.add_argument("--rounds", type=int, default=3, help="snapshot+download / Incremental pairs (default 3)")
    args = ap.parse_args()
    size = imagegen.parse_size(args.size)

    state = Path(os.environ.get("DEVCLOUD_STATE") or ROOT / ".state" / "bench-cloud").resolve()
    reused = "DEVCLOUD_STATE" in os.environ or cloud_running(state)  # left running at the end
    status = cloud_up(state, reused)
    os.environ["OS_CLIENT_CONFIG_FILE"] = status["clouds_yaml"]
    import openstack
    conn = openstack.connect(cloud="devcloud")

    work = Path(tempfile.mkdtemp(prefix="server-", dir=ROOT / ".state" / "bench"
                                 if (ROOT / ".state" / "bench").is_dir() else None))
    config = work / "stackvault.toml"
    config.write_text("[cloud]\nos_cloud = \"devcloud\"\n"
                      f"proxy_server = \"{status['proxy_server_id']}\"\n"
                      f"device_root = \"{status['proxy_device_root']}\"\ntimeout = 1800\nparallel = 2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKVAULT_")}
    env.update(HOME=str(work), STACKVAULT_CONFIG=str(config), STACKVAULT_REPO=str(work / "repo"),
               STACKVAULT_WORKDIR=str(work / "state"), OS_CLIENT_CONFIG_FILE=status["clouds_yaml"])

    name = f"bench-{uuid.uuid4().hex[:6]}"
    server = None
    results: list[tuple[str, float, int, str]] = []
    rounds: list[tuple[float, float, float]] = []  # (floor, Incremental wall, Incremental job) per round
    try:
        server = boot(conn, name)
        disk = state / "nova" / "instances" / server.id / "disk"
        layout = imagegen.plan_layout(size, SEED, MIX)
        raw = work / "disk.raw"
        log(f"generating {imagegen.human(size)} ({imagegen.human(size - layout.bytes_of(imagegen.HOLE))} data)")
        imagegen.write_image(str(raw), layout)
        replace_disk(raw, disk)

        subprocess.run([str(Path(sys.executable).parent / "stackvault"), "--json", "init",
                        "--block-size", args.block_size], env=env, check=True, capture_output=True)
        log("Full")
        full, full_out = stackvault(work, env, "full", "backup", "--server", name, "--level", "full")
        item = full_out["servers"][0]
        if item.get("status") != "success":
            raise SystemExit(f"Full backup of {name} failed: {item}")
        results.append(("Full backup", full.wall_s, full.peak_rss, split(full, full_out)))

        for n in range(1, args.rounds + 1):
            log(f"round {n}: snapshot + download")
            snap_s, dl_s, snap_bytes, hash_s = snapshot_and_download(conn, server)
            results.append((f"{n}: snapshot (create, wait)", snap_s, 0, ""))
            results.append((f"{n}: download snapshot once", dl_s, 0,
                            f"{imagegen.human(snap_bytes)} at {snap_bytes / dl_s / 2**20:.0f} MiB/s"))
            results.append((f"{n}:   again, hashed", hash_s, 0,
                            "not in the floor: stackvault's check of the Glance hash"))

            # another 1% each round: the change's places and bytes follow the layout's seed
            change = imagegen.ImageChange(dataclasses.replace(layout, seed=layout.seed + n), 0.01)
            change.apply(str(raw))
            replace_disk(raw, disk)
            log(f"round {n}: Incremental after changing {imagegen.human(change.bytes_changed)}")
            incr, incr_out = stackvault(work, env, "incremental", "backup", "--server", name)
            item = incr_out["servers"][0]
            if item.get("status") != "success" or item.get("level") != "incremental":
                raise SystemExit(f"Incremental backup of {name} did not succeed as incremental: {item}")
            results.append((f"{n}: Incremental backup", incr.wall_s, incr.peak_rss, split(incr, incr_out)))
            rounds.append((snap_s + dl_s, incr.wall_s, float(incr_out.get("duration_s") or 0)))
            (work / f"incremental-{n}.json").write_text(json.dumps(incr_out, indent=1))
    finally:
        if server is not None:
            conn.compute.delete_server(server, ignore_missing=True)
            conn.compute.wait_for_delete(server, wait=120)
        if not reused:
            log("devcloud down")
            devcloud(state, "down")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()
    print(f"\nserver disk {imagegen.human(size)}, ~40% data, block size {args.block_size}, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    print(f"{'phase':30} {'wall s':>7} {'peak RSS':>9}  notes")
    for label, wall, rss, note in results:
        print(f"{label:30} {wall:7.2f} {(f'{rss / 2**20:.0f} MiB' if rss else '-'):>9}  {note}")
    print()
    for n, (floor, wall, job) in enumerate(rounds, 1):
        print(f"round {n}: Incremental / (snapshot + one download) = {wall:.2f} / {floor:.2f} = {wall / floor:.2f}x "
              f"(without interpreter start/exit: {job / floor:.2f}x)")
    ratio = statistics.median(wall / floor for floor, wall, _ in rounds)
    bare = statistics.median(job / floor for floor, _, job in rounds)
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(f"median of {len(rounds)} rounds: {ratio:.2f}x (target <= {TARGET}x): {verdict}; "
          f"without interpreter start/exit {bare:.2f}x")
    print(f"Incremental peak RSS {max(r[2] for r in results if 'Incremental' in r[0]) / 2**20:.0f} MiB "
          f"(Full {full.peak_rss / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
