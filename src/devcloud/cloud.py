"""`up`, `down` and `status`: the order in which the dev cloud's parts start, and its report.

Order: services venv -> fault proxy -> Keystone (identities, catalog, clouds.yaml) -> Glance ->
seeded guest images -> Cinder -> Nova. With `ctx.ceph`, the Ceph cluster starts in a thread beside
Keystone and Glance (it needs neither, and its 3-7 s would otherwise add up) and is waited for
before Cinder, whose RBD backend connects to it. Every step is skipped when already done, so `up`
on a running cloud only checks it. Parts owned by other packages (guest, cinder, nova) are started
when importable and skipped with a log line otherwise.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from devcloud import ceph, glance, keystone, processes, rest, services_venv
from devcloud.context import REPO_ROOT, CloudContext, DevcloudError
from devcloud.nova import rbd as nova_rbd

log = logging.getLogger("devcloud")

PROXY = "faultproxy"
SERVICES = ("keystone", "glance", "cinder", "nova", "neutron")
#: Which spawned process (pid file name) serves each service; Neutron lives in Nova's process.
PROCESS_OF = {"keystone": "keystone", "glance": "glance", "cinder": "cinder", "nova": "nova",
              "neutron": "nova"}


def _optional(module: str, attr: str) -> Callable[..., Any] | None:
    """A function of a part that may not exist yet; None (logged) if its module is missing."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            log.info("skipping %s: %s is not available yet", module, exc.name)
            return None
        raise DevcloudError(f"cannot import {module}: {exc}; fix it or skip that part "
                            f"with `devcloud up --skip ...`") from exc
    except Exception as exc:  # another part's bug must name that part, not look like ours
        raise DevcloudError(f"cannot import {module}: {type(exc).__name__}: {exc}; fix it or "
                            f"skip that part with `devcloud up --skip ...`") from exc
    return getattr(mod, attr)


def check_ports(ctx: CloudContext, skip: set[str] | frozenset[str]) -> None:
    """Fail clearly, before starting anything, if a port we must bind is taken by someone else."""
    wanted: list[tuple[str, int]] = []
    if ctx.pid(PROXY) is None:
        wanted += [(f"{name} public", ctx.ports[name]) for name in SERVICES]
    for name in SERVICES:
        if PROCESS_OF[name] in skip or ctx.pid(PROCESS_OF[name]) is not None:
            continue
        wanted.append((name, ctx.port(name)))
    for label, port in wanted:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ctx.host, port))
            except OSError:
                raise DevcloudError(
                    f"port {port} ({label}) on {ctx.host} is in use by another process; pick "
                    f"other ports with `devcloud up --ports auto` (or SERVICE=PORT,...)") from None


def start_proxy(ctx: CloudContext) -> None:
    if ctx.pid(PROXY) is not None:
        return
    env = {"PYTHONPATH": str(REPO_ROOT / "src"), "PATH": "/usr/bin:/bin"}
    ctx.spawn(PROXY, [str(ctx.services_python), "-m", "devcloud.faultproxy", str(ctx.state_dir)],
              env=env)
    ctx.wait_http(ctx.public_url("keystone"), timeout=20, name=PROXY)


PARTS = ("images", "cinder", "nova")


def skipped_parts(skip: str | None = None) -> set[str]:
    """Parts to leave out: `--skip` / $DEVCLOUD_SKIP, comma separated, from PARTS."""
    raw = skip if skip is not None else os.environ.get("DEVCLOUD_SKIP", "")
    names = {s.strip() for s in raw.split(",") if s.strip()}
    unknown = names - set(PARTS)
    if unknown:
        raise DevcloudError(f"cannot skip {', '.join(sorted(unknown))}: parts are "
                            f"{', '.join(PARTS)}")
    return names


def up(ctx: CloudContext, skip: set[str] | frozenset[str] = frozenset()) -> CloudContext:
    """Bring every part up (idempotent); returns the context saved in the state dir."""
    started = time.monotonic()
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    check_ports(ctx, skip)
    ctx.save()
    services_venv.ensure(ctx)
    # Leaving the block waits for the cluster's thread, also when an earlier step failed.
    with ThreadPoolExecutor(1) as background:
        cluster = background.submit(ceph.start, ctx) if ctx.ceph else None
        _run_steps(ctx, skip, cluster)
    log.info("devcloud up in %.1f s", time.monotonic() - started)
    return ctx


def _run_steps(ctx: CloudContext, skip: set[str] | frozenset[str],
               cluster: Future[None] | None) -> None:
    def launch_keystone_and_glance() -> None:
        keystone.launch(ctx)
        glance.launch(ctx)

    steps: list[tuple[str, Callable[[], None]]] = [
        ("fault proxy", lambda: start_proxy(ctx)),
        # Both uWSGI apps load (slow imports) while keystone-manage bootstrap runs.
        ("keystone and glance launch", launch_keystone_and_glance),
        ("keystone", lambda: keystone.configure(ctx)),
        ("glance", lambda: glance.wait(ctx)),
    ]
    if "images" not in skip:
        steps.append(("guest images", lambda: _seed_images(ctx)))
    if cluster is not None:
        steps.append(("ceph", cluster.result))
    for part in ("cinder", "nova"):
        if part not in skip:
            module = f"devcloud.{part}.launch"
            steps.append((part, partial(_start_part, ctx, module)))
    for name, step in steps:
        t0 = time.monotonic()
        step()
        log.info("%s ready (%.1f s)", name, time.monotonic() - t0)


def _start_part(ctx: CloudContext, module: str) -> None:
    start = _optional(module, "start")
    if start is not None:
        start(ctx)


def _seed_images(ctx: CloudContext) -> None:
    build_all = _optional("devcloud.guest.images", "build_all")
    if build_all is None:
        return
    guest_images = build_all(ctx.cache_dir / "guest")
    glance.seed_images(ctx, guest_images)


def down(state_dir: Path) -> list[str]:
    """Stop every process of the cloud in `state_dir` by pid; its data stays for the next `up`.

    The Ceph daemons go last, OSD before monitor: Cinder may be deleting an RBD image when `down`
    comes, and librados waits for a vanished cluster instead of failing (so Cinder would then
    take its whole SIGKILL timeout to stop). The backup proxy's rbd-fuse mounts go before the
    daemons too, for the same reason."""
    state_dir = Path(state_dir).resolve()
    stopped = processes.stop_all(state_dir, keep=(ceph.MON, ceph.OSD))
    nova_rbd.unmount_all(state_dir)
    stopped += ceph.stop(state_dir)
    return sorted(set(stopped + processes.stop_all(state_dir)))


def status(ctx: CloudContext) -> dict[str, Any]:
    """What `devcloud status --json` prints (see ARCHITECTURE.md)."""
    services: dict[str, Any] = {}
    for name in SERVICES:
        pid = ctx.pid(PROCESS_OF[name])
        services[name] = {"url": ctx.public_url(name), "backend_url": ctx.url(name),
                          "pid": pid, "running": pid is not None}
    proxy_pid = ctx.pid(PROXY)
    services[PROXY] = {"pid": proxy_pid, "running": proxy_pid is not None}
    report: dict[str, Any] = {
        "state_dir": str(ctx.state_dir), "clouds_yaml": str(ctx.clouds_yaml), "cloud": "devcloud",
        "fast": ctx.fast, "services": services, "images": [],
        "proxy_server_id": None, "proxy_device_root": str(ctx.proxy_device_root),
    }
    if ctx.ceph and ceph.enabled(ctx.state_dir):
        report["ceph"] = ceph.status(ctx)
    if not (services["keystone"]["running"] and services["glance"]["running"]):
        return report
    try:
        token = glance.admin_token(ctx)
        report["images"] = [{"name": i["name"], "id": i["id"], "status": i["status"],
                             "disk_format": i.get("disk_format"),
                             "properties": glance.properties(i)}
                            for i in glance.list_images(ctx, token)]
        if services["nova"]["running"]:
            data = rest.request("GET", ctx.url("nova") + "/v2.1/servers?name=^stackvault-proxy$",
                                token=token)[2]
            servers = data.get("servers", [])
            report["proxy_server_id"] = servers[0]["id"] if servers else None
    except DevcloudError as exc:
        report["error"] = str(exc)
    return report
