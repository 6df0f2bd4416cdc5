"""Start emulated Nova + Neutron for a dev cloud (called by `devcloud up`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from devcloud import ceph, rest
from devcloud.context import REPO_ROOT, CloudContext, DevcloudError
from devcloud.nova.config import QUIESCE_MODES, NovaConfig

PROCESS_NAME = "nova"


def config_path(ctx: CloudContext) -> Path:
    return ctx.service_dir("nova") / "nova.json"


def write_config(ctx: CloudContext) -> NovaConfig:
    """nova.json from the context; the proxy server belongs to the admin project."""
    token_body = rest.password_token(ctx.auth_url(public=False), "admin", ctx.admin_password,
                                     "admin")[1]
    cfg = NovaConfig(
        state_dir=str(ctx.state_dir), nova_port=ctx.port("nova"),
        neutron_port=ctx.port("neutron"), keystone_url=ctx.url("keystone"),
        glance_url=ctx.url("glance"), cinder_url=ctx.url("cinder"),
        service_password=ctx.service_password, host=ctx.host, fast=ctx.fast, region=ctx.region,
        proxy_project_id=token_body["project"]["id"], proxy_user_id=token_body["user"]["id"],
        proxy_device_root=str(ctx.proxy_device_root),
        guest_image_cache=os.environ.get("DEVCLOUD_GUEST_CACHE") or str(ctx.cache_dir / "guest"),
        quiesce=quiesce_mode(), **detach_retries(ctx),
        ceph_conf=str(ceph.conf_path(ctx.state_dir)) if ctx.ceph else "")
    cfg.save(config_path(ctx))
    return cfg


def quiesce_mode() -> str:
    """DEVCLOUD_NOVA_QUIESCE at `up` (default `current`), one of config.QUIESCE_MODES."""
    mode = os.environ.get("DEVCLOUD_NOVA_QUIESCE", "current")
    if mode not in QUIESCE_MODES:
        raise DevcloudError(f"DEVCLOUD_NOVA_QUIESCE={mode} is not one of "
                            f"{', '.join(QUIESCE_MODES)}")
    return mode


def detach_retries(ctx: CloudContext) -> dict[str, Any]:
    """DEVCLOUD_NOVA_DETACH_ATTEMPTS / _INTERVAL at `up`: by default libvirt's 8 attempts 20 s
    apart, or 3 quick ones in fast mode (no guest to wait for)."""
    attempts, interval = ("3", "0.5") if ctx.fast else ("8", "20")
    return {"detach_attempts": int(os.environ.get("DEVCLOUD_NOVA_DETACH_ATTEMPTS", attempts)),
            "detach_interval": float(os.environ.get("DEVCLOUD_NOVA_DETACH_INTERVAL", interval))}


def start(ctx: CloudContext, timeout: float = 60) -> None:
    """Spawn the Nova process (idempotent: a running one is kept) and wait until it answers."""
    if ctx.pid(PROCESS_NAME) is None:
        write_config(ctx)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT / "src")
        ctx.spawn(PROCESS_NAME, [str(ctx.services_python), "-m", "devcloud.nova.service",
                                 str(config_path(ctx))], env=env)
    ctx.wait_http(ctx.url("nova") + "/", timeout=timeout, name=PROCESS_NAME)
    ctx.wait_http(ctx.url("neutron") + "/", timeout=timeout, name=PROCESS_NAME)


def proxy_server_id(ctx: CloudContext) -> str | None:
    """Id of the `stackvault-proxy` server (for `status --json`)."""
    path = ctx.state_dir / "nova" / "proxy-server-id"
    return path.read_text().strip() if path.exists() else None
