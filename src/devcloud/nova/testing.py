"""Test helpers for the emulated Nova (used by tests/devcloud/test_nova_*.py): the `openstack`
CLI with JSON output, polling, disk comparison. Runs in the test venv, not in Nova."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devcloud import rest

IMAGE_AGENT = "sv-agent"
IMAGE_AGENT_DEAD = "sv-agent-dead"
FLAVOR = "m1.tiny"


def cli_json(dc: Any, *args: str) -> Any:
    out = dc.openstack(*args, "-f", "json").stdout
    return json.loads(out) if out.strip() else None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 300,
             interval: float = 1.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def create_server(dc: Any, name: str, image: str = IMAGE_AGENT, *extra: str,
                  boot_from_volume: int | None = None) -> dict[str, Any]:
    args = ["server", "create", "--image", image, "--flavor", FLAVOR, "--network", "private",
            "--wait", *extra]
    if boot_from_volume:
        args += ["--boot-from-volume", str(boot_from_volume)]
    return cli_json(dc, *args, name)


def delete_server(dc: Any, server_id: str) -> None:
    dc.openstack("server", "delete", "--wait", server_id, check=False, timeout=300)


def raw_sha256(path: Path, fmt: str | None = None) -> str:
    """sha256 of a disk image's guest-visible bytes (any format, via qemu-img convert)."""
    raw = path.with_suffix(".cmp.raw")
    argv = ["qemu-img", "convert", "-O", "raw", str(path), str(raw)]
    if fmt:
        argv[2:2] = ["-f", fmt]
    subprocess.run(argv, check=True, capture_output=True)
    digest = hashlib.sha256()
    with open(raw, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    raw.unlink()
    return digest.hexdigest()


def action_events(dc: Any, server_id: str, action: str) -> dict[str, Any]:
    """The newest instance action of this kind, with its events (as `server event show`)."""
    actions = cli_json(dc, "server", "event", "list", server_id)
    match = next(a for a in actions if a["Action"] == action)
    return cli_json(dc, "server", "event", "show", server_id, match["Request ID"])


class NovaUser:
    """The compute API as one user: a Keystone token, plain JSON requests through the fault proxy."""

    def __init__(self, dc: Any, user: str, password: str):
        self.token, body = rest.password_token(dc.ctx.auth_url(), user, password, user)
        self.project_id = body["project"]["id"]
        self.base = dc.ctx.public_url("nova") + "/v2.1"

    def __call__(self, method: str, path: str, body: Any = None, version: str = "2.79") -> Any:
        return rest.request(method, self.base + path, token=self.token, body=body,
                            headers={"OpenStack-API-Version": f"compute {version}"})[2]

    def status(self, method: str, path: str, body: Any = None,
               version: str = "2.79") -> tuple[int, str]:
        """The HTTP status and error message of a request expected to fail."""
        try:
            self(method, path, body, version)
        except rest.ApiError as err:
            return err.status, str(err)
        raise AssertionError(f"{method} {path} succeeded where it was expected to fail")

    def boot(self, name: str, image_id: str, **extra: Any) -> str:
        """A server (fast mode or not, its record is what the listing tests need)."""
        server = {"name": name, "flavorRef": "1", "imageRef": image_id, "networks": "auto",
                  **extra}
        return str(self("POST", "/servers", {"server": server})["server"]["id"])


def restart_nova(ctx: Any) -> None:
    """Stop the cloud's Nova process and start it again (state and guests stay)."""
    from devcloud.nova import launch
    pid = ctx.pid("nova")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        wait_for("nova to stop", lambda: ctx.pid("nova") != pid, timeout=30, interval=0.2)
    launch.start(ctx)


@contextmanager
def quiesce_mode(dc: Any, mode: str) -> Iterator[None]:
    """Nova as DEVCLOUD_NOVA_QUIESCE=`mode` says (`current` or `strict`) for the block, and as it
    was afterwards; restarted only when it runs in the other mode."""
    from devcloud.nova import launch
    from devcloud.nova.config import NovaConfig
    before = NovaConfig.load(launch.config_path(dc.ctx)).quiesce
    _run_nova_in_mode(dc.ctx, mode)
    try:
        yield
    finally:
        _run_nova_in_mode(dc.ctx, before)


def _run_nova_in_mode(ctx: Any, mode: str) -> None:
    from devcloud.nova import launch
    from devcloud.nova.config import NovaConfig
    if NovaConfig.load(launch.config_path(ctx)).quiesce == mode:
        return
    saved = os.environ.get("DEVCLOUD_NOVA_QUIESCE")
    os.environ["DEVCLOUD_NOVA_QUIESCE"] = mode
    try:
        restart_nova(ctx)
    finally:
        if saved is None:
            os.environ.pop("DEVCLOUD_NOVA_QUIESCE")
        else:
            os.environ["DEVCLOUD_NOVA_QUIESCE"] = saved


def wait_active(nova: NovaUser, server_id: str) -> dict[str, Any]:
    """The server once ACTIVE with no task running (an ERROR on the way fails with its fault)."""
    def reached() -> dict[str, Any] | None:
        server = nova("GET", f"/servers/{server_id}")["server"]
        assert server["status"] != "ERROR", server.get("fault")
        return server if server["status"] == "ACTIVE" and not server["OS-EXT-STS:task_state"] else None
    return wait_for(f"server {server_id} ACTIVE", reached, timeout=300)
