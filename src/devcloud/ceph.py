"""A real single-node Ceph for the dev cloud (by default; `devcloud up --no-ceph` or DEVCLOUD_CEPH=0
leaves it out).

Why a real one: stackvault's changed-block backups read RBD snapshots and their diffs, and only
librbd itself answers those the way a production cluster does (object-map, fast-diff, the shape of
diffs over new objects). So this runs Debian's own daemons, as Ceph's vstart.sh does, minus
everything a test does not need: one monitor on 127.0.0.1 (v2 and v1 on free ports), one bluestore
OSD on a sparse file, no mgr (RBD I/O, snapshots, diffs and clones work without it; only capacity
statistics are missing), size-1 pools, and a monitor that proposes map changes every 0.1 s instead
of every second (which halves the start time).

Everything lives in `<state>/ceph/`: `ceph.conf`, `cluster.json` (fsid, monitor ports), the
keyrings `ceph.client.<user>.keyring` (admin; cinder with rbd rights on the pool; stackvault, a
backup proxy's read-only user), `mon.a/`, `osd.0/` (its `block` file is sparse, 10 GiB apparent),
`python/` (the two Debian binding modules, see `bindings_dir`). The daemons run in the foreground
under `processes.spawn` (pid files `run/ceph-mon.pid`, `run/ceph-osd.pid`, logs
`logs/ceph-mon.log`, `logs/ceph-osd.log`), so `down` stops them like every other process of
the cloud and a second `up` resumes the cluster with its data.

Monitor commands go through librados (`Rados.mon_command`), not the `ceph` CLI: each CLI call is
a Python start costing 0.3-0.7 s on this machine.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devcloud import processes
from devcloud.context import CloudContext, DevcloudError, free_ports

log = logging.getLogger("devcloud")

POOL = "volumes"
"""The one pool: Cinder's `ceph` backend keeps its volumes (and their snapshots, clones) here."""

CINDER_USER = "cinder"
PROXY_USER = "stackvault"
#: Rights of each client user: Cinder creates, snapshots, clones and deletes images in the pool;
#: a backup proxy only reads them (`profile rbd-read-only` still lets it open images and diff
#: snapshots, which takes the header's watch, but never write data).
USER_CAPS = {
    CINDER_USER: ["mon", "profile rbd", "osd", f"profile rbd pool={POOL}"],
    PROXY_USER: ["mon", "profile rbd", "osd", f"profile rbd-read-only pool={POOL}"],
}
MON, OSD = "ceph-mon", "ceph-osd"
OSD_SIZE = "10G"
#: The smallest value the OSD accepts: its caches stay small (RSS 55 MiB idle, < 200 MiB busy).
OSD_MEMORY_TARGET = 896 << 20
DEBIAN_BINDINGS = Path("/usr/lib/python3/dist-packages")
COMPLETE = ".complete"


def ceph_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "ceph"


def conf_path(state_dir: Path) -> Path:
    return ceph_dir(state_dir) / "ceph.conf"


def keyring_path(state_dir: Path, user: str) -> Path:
    """`<state>/ceph/ceph.client.<user>.keyring`: found by every client through `keyring` in
    ceph.conf, so `rbd --id stackvault -c <conf>` needs no `--keyring`."""
    return ceph_dir(state_dir) / f"ceph.client.{user}.keyring"


def bindings_dir(state_dir: Path) -> Path:
    """A directory holding only Debian's `rados` and `rbd` extension modules (symlinks).

    PyPI has no librados/librbd bindings; Debian's are built for its /usr/bin/python3 (3.11.2)
    while our venvs come from pyenv's 3.11.7. Same CPython ABI, so the modules import fine, but a
    `--system-site-packages` venv would also pull in all of Debian's dist-packages (its old
    pyOpenSSL breaks Cinder's imports). Putting just this directory on a path adds the two modules
    and nothing else, and leaves the cached services venv untouched.
    """
    return ceph_dir(state_dir) / "python"


def _check_installed() -> None:
    missing = [tool for tool in ("ceph-mon", "ceph-osd", "monmaptool", "rbd")
               if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        raise DevcloudError(f"{', '.join(missing)} not found: install the Debian packages in "
                            "deps/apt-ceph.txt (./scripts/bootstrap does)")


def ensure_bindings(state_dir: Path) -> Path:
    target = bindings_dir(state_dir)
    target.mkdir(parents=True, exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for module in ("rados", "rbd"):
        source = DEBIAN_BINDINGS / f"{module}{suffix}"
        if not source.exists():
            raise DevcloudError(f"{source} is missing: install the Debian packages in "
                                "deps/apt-ceph.txt (./scripts/bootstrap does)")
        link = target / source.name
        if not link.is_symlink():
            link.symlink_to(source)
    return target


def import_bindings(state_dir: Path) -> tuple[Any, Any]:
    """(rados, rbd) modules, importable from any of our CPython 3.11 interpreters."""
    path = str(ensure_bindings(state_dir))
    if path not in sys.path:
        sys.path.insert(0, path)
    import rados  # only importable once the path is set
    import rbd
    return rados, rbd


def new_cephx_key() -> str:
    """A new cephx secret, as `ceph-authtool --gen-print-key` makes it (without a process):
    type 1 (AES), creation time, length, 16 random bytes."""
    return base64.b64encode(struct.pack("<HIIH", 1, int(time.time()), 0, 16)
                            + os.urandom(16)).decode()


def _keyring(entity: str, key: str, caps: dict[str, str]) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    lines += [f'\tcaps {kind} = "{cap}"' for kind, cap in caps.items()]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def render_conf(state_dir: Path, fsid: str, host: str, v2: int, v1: int) -> str:
    """ceph.conf: every path under `<state>/ceph` (nothing in /etc, /var/lib, /var/log, /run)."""
    d = ceph_dir(state_dir)
    return f"""# Generated by devcloud at every start of this cluster; read by the daemons and every client.
[global]
fsid = {fsid}
mon host = [v2:{host}:{v2},v1:{host}:{v1}]
public addr = {host}
cluster addr = {host}
keyring = {d}/$cluster.$name.keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
crash dir = {d}/crash
# Daemons run with -d (log to stderr, which is <state>/logs/ceph-*.log); the cluster log stays
# in the monitor's store, readable with `ceph log last`.
mon cluster log to file = false
# One OSD: every pool has one copy, and placement never needs a second host.
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
mon allow pool size one = true
# HEALTH_OK on one OSD: no redundancy is intended, the shared disk may be fuller than 70 %.
mon warn on pool no redundancy = false
# No mgr by design: without this the monitor raises MGR_DOWN 120 s after the cluster's creation.
mon mgr mkfs grace = 315360000
mon data avail warn = 2
auth allow insecure global id reclaim = false
# Clone v2 (Cinder clones from unprotected snapshots).
mon osd initial require min compat client = mimic
# Test setting: propose map changes every 0.1 s instead of 1 s (start 6-7 s instead of 11-12 s).
paxos propose interval = 0.1

[mon]
mon data = {d}/mon.$id
keyring = $mon_data/keyring

[osd]
osd data = {d}/osd.$id
keyring = $osd_data/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {OSD_SIZE}
osd memory target = {OSD_MEMORY_TARGET}
"""


def enabled(state_dir: Path) -> bool:
    """True once a cluster was fully created in this state dir."""
    return (ceph_dir(state_dir) / COMPLETE).exists()


def cluster_info(state_dir: Path) -> dict[str, Any]:
    return json.loads((ceph_dir(state_dir) / "cluster.json").read_text())


# ---- talking to the monitor ------------------------------------------------------------------

def connect(state_dir: Path, user: str = "admin", timeout: float = 10) -> Any:
    """A connected `rados.Rados` as client.<user>; close it (or use it as a context manager)."""
    rados, _ = import_bindings(state_dir)
    cluster = rados.Rados(conffile=str(conf_path(state_dir)), name=f"client.{user}",
                          conf={"client_mount_timeout": str(int(timeout)),
                                "rados_osd_op_timeout": "60", "rados_mon_op_timeout": "30"})
    cluster.connect(timeout=int(timeout))
    return cluster


def mon_command(cluster: Any, prefix: str, inbuf: bytes = b"", **args: Any) -> Any:
    """One monitor command; the parsed JSON answer (or its text), DevcloudError on failure."""
    cmd = {"prefix": prefix, "format": "json", **args}
    ret, out, err = cluster.mon_command(json.dumps(cmd), inbuf, timeout=30)
    if ret != 0:
        raise DevcloudError(f"ceph {prefix} failed ({ret}): {err}")
    try:
        return json.loads(out) if out else None
    except ValueError:
        return out.decode(errors="replace")


# ---- start and stop ----------------------------------------------------------------------------

def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise DevcloudError(f"{what} failed ({' '.join(argv)}):\n{proc.stdout[-2000:]}")


def _spawn_daemon(ctx: CloudContext, name: str, daemon_id: str) -> None:
    if ctx.pid(name) is None:
        # -d: foreground, log to stderr (= <state>/logs/<name>.log), so spawn owns the process.
        ctx.spawn(name, [name, "-d", "-c", str(conf_path(ctx.state_dir)), "-i", daemon_id],
                  env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


def _check_alive(ctx: CloudContext, name: str) -> None:
    if ctx.pid(name) is None:
        time.sleep(0.3)  # the pid file of a just-spawned process may be rewritten meanwhile
        if ctx.pid(name) is None:
            raise DevcloudError(f"{name} exited; see {ctx.log_dir / (name + '.log')}:\n"
                                + processes.log_tail(ctx.state_dir, name))


def _connect_while(ctx: CloudContext, deadline: float) -> Any:
    """Connect as admin, retrying until the monitor answers (it binds within a second)."""
    rados, _ = import_bindings(ctx.state_dir)
    last: Exception | None = None
    while time.monotonic() < deadline:
        _check_alive(ctx, MON)
        try:
            return connect(ctx.state_dir, timeout=5)
        except rados.Error as exc:
            last = exc
            time.sleep(0.2)
    raise DevcloudError(f"the ceph monitor did not answer: {last}; see "
                        f"{ctx.log_dir / (MON + '.log')}")


def _wait_osd_up(ctx: CloudContext, cluster: Any, deadline: float) -> None:
    while time.monotonic() < deadline:
        _check_alive(ctx, OSD)
        osds = mon_command(cluster, "osd dump")["osds"]
        if osds and osds[0]["up"] == 1:
            return
        time.sleep(0.1)
    raise DevcloudError(f"osd.0 did not come up; see {ctx.log_dir / (OSD + '.log')}")


def _create(ctx: CloudContext, deadline: float) -> None:
    """A new cluster: monitor, OSD, pool, users. Overlaps the slow bluestore mkfs (about 4 s)
    with the monitor's start and the monitor commands that do not need the OSD."""
    d = ceph_dir(ctx.state_dir)
    for sub in ("run", "crash", "osd.0"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    ports = free_ports(["v2", "v1"], ctx.host)
    (d / "ceph.conf").write_text(render_conf(ctx.state_dir, fsid, ctx.host, ports["v2"],
                                             ports["v1"]))
    (d / "cluster.json").write_text(json.dumps(
        {"fsid": fsid, "host": ctx.host, "mon_port_v2": ports["v2"],
         "mon_port_v1": ports["v1"]}, indent=2) + "\n")
    conf = str(d / "ceph.conf")
    admin_key = new_cephx_key()
    admin_caps = {"mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"}
    _write_private(keyring_path(ctx.state_dir, "admin"),
                   _keyring("client.admin", admin_key, admin_caps))
    _write_private(d / "mon-mkfs.keyring",
                   _keyring("mon.", new_cephx_key(), {"mon": "allow *"})
                   + _keyring("client.admin", admin_key, admin_caps))
    monmap = d / "monmap"
    _run(["monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a",
          f"[v2:{ctx.host}:{ports['v2']},v1:{ctx.host}:{ports['v1']}]", str(monmap)], "monmaptool")
    _run(["ceph-mon", "-d", "-c", conf, "--mkfs", "-i", "a", "--monmap", str(monmap),
          "--keyring", str(d / "mon-mkfs.keyring")], "ceph-mon --mkfs")
    (d / "mon-mkfs.keyring").unlink()
    _spawn_daemon(ctx, MON, "a")

    osd_uuid, osd_key = str(uuid.uuid4()), new_cephx_key()
    with ThreadPoolExecutor(1) as pool:
        mkfs = pool.submit(_run, ["ceph-osd", "-d", "-c", conf, "-i", "0", "--mkfs",
                                  "--no-mon-config", "--monmap", str(monmap), "--osd-uuid", osd_uuid,
                                  "--key", osd_key], "ceph-osd --mkfs")
        cluster = _connect_while(ctx, deadline)
        try:
            mon_command(cluster, "osd new", json.dumps({"cephx_secret": osd_key}).encode(),
                        uuid=osd_uuid, id=0)
            mon_command(cluster, "osd pool create", pool=POOL, pg_num=8, pgp_num=8)
            for user, caps in USER_CAPS.items():
                text = mon_command(cluster, "auth get-or-create", entity=f"client.{user}",
                                   caps=caps, format="plain")
                _write_private(keyring_path(ctx.state_dir, user), text)
            mkfs.result()
            _write_private(d / "osd.0" / "keyring", _keyring("osd.0", osd_key, {}))
            _spawn_daemon(ctx, OSD, "0")
            _wait_osd_up(ctx, cluster, deadline)
            _, rbd = import_bindings(ctx.state_dir)
            with cluster.open_ioctx(POOL) as ioctx:
                rbd.RBD().pool_init(ioctx, False)  # writes an object: returns once PGs are active
        finally:
            cluster.shutdown()
    monmap.unlink()
    (d / COMPLETE).write_text(fsid + "\n")


def _resume(ctx: CloudContext, deadline: float) -> None:
    """A stopped cluster: start what is not running, then wait until the pool serves I/O."""
    rados, _ = import_bindings(ctx.state_dir)
    info = cluster_info(ctx.state_dir)  # settings of this devcloud apply to an older cluster too
    conf_path(ctx.state_dir).write_text(render_conf(ctx.state_dir, info["fsid"], info["host"],
                                                    info["mon_port_v2"], info["mon_port_v1"]))
    _spawn_daemon(ctx, MON, "a")
    _spawn_daemon(ctx, OSD, "0")
    cluster = _connect_while(ctx, deadline)
    try:
        _wait_osd_up(ctx, cluster, deadline)
        with cluster.open_ioctx(POOL) as ioctx:
            try:
                ioctx.stat("devcloud-probe")  # answers (not found) once its PG is active
            except rados.ObjectNotFound:
                pass
    finally:
        cluster.shutdown()


def start(ctx: CloudContext, timeout: float = 120) -> None:
    """Create (first time) or resume the cluster and wait until pool `volumes` serves I/O.
    A failed creation stops what it started and leaves the logs; the next `up` starts over."""
    started = time.monotonic()
    deadline = started + timeout
    _check_installed()
    ensure_bindings(ctx.state_dir)
    if enabled(ctx.state_dir):
        _resume(ctx, deadline)
        log.info("ceph resumed in %.1f s", time.monotonic() - started)
        return
    stop(ctx.state_dir)
    d = ceph_dir(ctx.state_dir)
    if d.exists():  # an interrupted creation: its half-made stores are of no use
        for child in d.iterdir():
            if child.name != "python":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    try:
        _create(ctx, deadline)
    except BaseException:
        stop(ctx.state_dir)
        raise
    log.info("ceph cluster created in %.1f s", time.monotonic() - started)


def stop(state_dir: Path, timeout: float = 15) -> list[str]:
    """Stop the OSD, then the monitor (the OSD's clean shutdown wants to tell the monitor).
    `devcloud down` calls this after stopping Cinder, and removes the pid files afterwards.
    Returns the names of the daemons it stopped."""
    stopped = []
    for name in (OSD, MON):
        pid = processes.running_pid(Path(state_dir), name)
        if pid is None:
            continue
        stopped.append(name)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and processes.running_pid(Path(state_dir), name):
            time.sleep(0.05)
        if processes.running_pid(Path(state_dir), name):
            os.kill(pid, signal.SIGKILL)
    return stopped


# ---- status --------------------------------------------------------------------------------

def status(ctx: CloudContext) -> dict[str, Any]:
    """The `ceph` part of `devcloud status --json`: what a proxy needs to reach the cluster."""
    info = cluster_info(ctx.state_dir)
    report: dict[str, Any] = {
        "fsid": info["fsid"],
        "mon_host": f"[v2:{info['host']}:{info['mon_port_v2']},v1:{info['host']}:"
                    f"{info['mon_port_v1']}]",
        "conf": str(conf_path(ctx.state_dir)),
        "pool": POOL,
        "keyrings": {u: str(keyring_path(ctx.state_dir, u))
                     for u in ("admin", CINDER_USER, PROXY_USER)},
        "proxy_user": PROXY_USER,
        "python_bindings": str(bindings_dir(ctx.state_dir)),
        "daemons": {n: {"pid": ctx.pid(n), "running": ctx.pid(n) is not None} for n in (MON, OSD)},
        "health": None, "health_checks": {}, "pools": [],
    }
    if ctx.pid(MON) is None:
        return report
    rados, _ = import_bindings(ctx.state_dir)
    try:
        cluster = connect(ctx.state_dir, timeout=5)
    except rados.Error as exc:
        report["error"] = f"cannot connect: {exc}"
        return report
    try:
        health = mon_command(cluster, "health")
        report["health"] = health["status"]
        report["health_checks"] = {code: check.get("summary", {}).get("message", "")
                                   for code, check in health.get("checks", {}).items()}
        report["pools"] = [{"name": p["pool_name"], "id": p["pool"], "size": p["size"],
                            "pg_num": p["pg_num"],
                            "application": sorted(p.get("application_metadata", {}))}
                           for p in mon_command(cluster, "osd dump")["pools"]]
    except DevcloudError as exc:
        report["error"] = str(exc)
    finally:
        cluster.shutdown()
    return report
