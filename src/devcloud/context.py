"""The one object every part of devcloud is handed: where the cloud lives and how to reach it.

A `CloudContext` is rebuilt from `<state>/config.json` by every command (`up`, `down`, `status`,
`fault`), so ports chosen once (possibly picked free for a test session) stay the same for the
life of that state directory.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devcloud import processes

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".state" / "devcloud"
DEFAULT_CACHE_DIR = REPO_ROOT / ".state" / "cache"

#: Public ports (what the catalog and clouds.yaml point at, through the fault proxy).
DEFAULT_PORTS: dict[str, int] = {
    "keystone": 35357,
    "glance": 39292,
    "cinder": 38776,
    "nova": 38774,
    "neutron": 39696,
}
#: Each service itself listens on its public port plus this offset (the proxy sits in between).
BACKEND_PORT_OFFSET = 1000

#: URL path of each service's endpoint in the catalog, after host:port.
ENDPOINT_PATHS: dict[str, str] = {
    "keystone": "",
    "glance": "",
    "cinder": "/v3/$(project_id)s",
    "nova": "/v2.1",
    "neutron": "",
}


class DevcloudError(Exception):
    """An error a user can meet and fix; its message names the thing and the fix."""


def state_dir_from_env(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The state dir: the explicit option, else $DEVCLOUD_STATE, else <repo>/.state/devcloud."""
    raw = explicit or os.environ.get("DEVCLOUD_STATE") or DEFAULT_STATE_DIR
    return Path(raw).expanduser().resolve()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for test sessions that must not collide).

    Picked below Linux's ephemeral range (32768-60999): a port the kernel handed out would be
    handed out again to some outgoing connection before our service binds it.
    """
    for _ in range(200):
        port = random.randrange(20000, 32700)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise DevcloudError("no free TCP port found in 20000-32700 on " + host)


def free_ports(names: list[str] | tuple[str, ...], host: str = "127.0.0.1") -> dict[str, int]:
    """Distinct free ports, one per name."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port(host)
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


@dataclass
class CloudContext:
    """State dir, ports and credentials of one dev cloud; also spawns and waits for its processes."""

    state_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    backend_ports: dict[str, int] = field(default_factory=dict)
    fast: bool = False
    cache_dir: Path = DEFAULT_CACHE_DIR
    region: str = "RegionOne"
    ceph: bool = False  # also a real single-node Ceph and Cinder's RBD backend (devcloud.ceph)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.cache_dir = Path(self.cache_dir).resolve()
        self.ports = {**DEFAULT_PORTS, **self.ports}
        for name, port in self.ports.items():
            self.backend_ports.setdefault(name, port + BACKEND_PORT_OFFSET)

    # ---- persistence -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.state_dir / "config.json"

    @classmethod
    def load(cls, state_dir: Path) -> CloudContext:
        """The context saved by `up` in this state dir, or defaults if `up` never ran there."""
        state_dir = Path(state_dir).resolve()
        path = state_dir / "config.json"
        if not path.exists():
            return cls(state_dir=state_dir)
        raw = json.loads(path.read_text())
        return cls(
            state_dir=state_dir,
            host=raw.get("host", "127.0.0.1"),
            ports={**DEFAULT_PORTS, **raw.get("ports", {})},
            backend_ports=dict(raw.get("backend_ports", {})),
            fast=bool(raw.get("fast", False)),
            cache_dir=Path(raw.get("cache_dir", DEFAULT_CACHE_DIR)),
            region=raw.get("region", "RegionOne"),
            ceph=bool(raw.get("ceph", False)),
        )

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "host": self.host,
            "ports": self.ports,
            "backend_ports": self.backend_ports,
            "fast": self.fast,
            "cache_dir": str(self.cache_dir),
            "region": self.region,
            "ceph": self.ceph,
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.config_path)

    # ---- layout ------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def venv_dir(self) -> Path:
        return self.state_dir / "venv"

    @property
    def services_python(self) -> Path:
        """Python of the services virtualenv (Keystone, Glance, Cinder, openstacksdk, our Nova)."""
        return self.venv_dir / "bin" / "python"

    def services_bin(self, name: str) -> Path:
        return self.venv_dir / "bin" / name

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    @property
    def faults_path(self) -> Path:
        return self.state_dir / "faults.json"

    @property
    def proxy_device_root(self) -> Path:
        return self.state_dir / "proxy-devices"

    def service_dir(self, name: str) -> Path:
        """Per-service data dir (config, SQLite, files), created on first use."""
        path = self.state_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- credentials -------------------------------------------------------------------------
    def _secret(self, filename: str) -> str:
        path = self.state_dir / filename
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(18) + "\n")
        return path.read_text().strip()

    @property
    def admin_password(self) -> str:
        return self._secret("admin-password")

    @property
    def service_password(self) -> str:
        """Password of the service users glance, cinder, nova, neutron (project `service`)."""
        return self._secret("service-password")

    @property
    def demo_password(self) -> str:
        return self._secret("demo-password")

    # ---- URLs --------------------------------------------------------------------------------
    def port(self, service: str) -> int:
        """The port the service itself binds (behind the fault proxy)."""
        return self.backend_ports[service]

    def url(self, service: str) -> str:
        """Direct URL of a service (what it binds; used service-to-service, never faulted)."""
        return f"http://{self.host}:{self.backend_ports[service]}"

    def public_url(self, service: str) -> str:
        """URL through the fault proxy: what the public catalog and clouds.yaml point at."""
        return f"http://{self.host}:{self.ports[service]}"

    def auth_url(self, *, public: bool = True) -> str:
        return (self.public_url if public else self.url)("keystone") + "/v3"

    # ---- processes ---------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> int:
        """Start a detached process; log to <state>/logs/<name>.log, pid in <state>/run/<name>.pid."""
        return processes.spawn(self.state_dir, name, argv, env=env, cwd=cwd)

    def pid(self, name: str) -> int | None:
        """Pid of a running process this cloud spawned under `name`, else None."""
        return processes.running_pid(self.state_dir, name)

    def _settles(self, name: str) -> bool:
        """Second look before declaring a process dead (a pid file may be rewritten meanwhile)."""
        time.sleep(0.5)
        return self.pid(name) is not None

    def wait_http(self, url: str, timeout: float = 60, name: str | None = None) -> None:
        """Wait until `url` answers any HTTP status; fail early (with its log tail) if `name` died."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # it answered: up
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            if name is not None and self.pid(name) is None and not self._settles(name):
                raise DevcloudError(
                    f"{name} exited while starting; see {self.log_dir / (name + '.log')}:\n"
                    + processes.log_tail(self.state_dir, name))
            time.sleep(0.2)
        raise DevcloudError(f"{url} did not answer within {timeout:.0f} s ({last}); "
                            f"see the logs in {self.log_dir}")
