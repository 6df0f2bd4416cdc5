"""Start and stop the Swift all-in-one: memcached, account/container/object servers, two proxies.

The `proxy` serves the S3 API (s3api) and the Swift API with tempauth (account `AUTH_test`, S3
access key `test:tester`, secret `testing`); memcached holds tempauth's tokens. The optional
`proxy_keystone` serves the Swift API with Keystone tokens (authtoken + keystoneauth, accounts
`AUTH_<project id>`), since openstacksdk cannot authenticate with tempauth. Both proxies share the
storage servers. Processes are spawned and stopped by pid through `devcloud.processes`, with the
state dir as their marker, so stopping never touches another cloud's processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devcloud import processes
from devcloud.context import DEFAULT_CACHE_DIR, REPO_ROOT, DevcloudError, free_port
from devcloud.swift import config, venv

log = logging.getLogger("devcloud.swift")

DEFAULT_STATE_DIR = REPO_ROOT / ".state" / "swift"
PORT_NAMES = ("proxy", "proxy_keystone", "account", "container", "object", "memcached")
DEFAULT_PORTS = {"proxy": 38080, "proxy_keystone": 38081, "account": 36012, "container": 36011,
                 "object": 36010, "memcached": 31211}
REGION = "us-east-1"


@dataclass
class SwiftAllInOne:
    """One Swift on loopback under `state_dir`; ports are kept in `<state>/swift.json`."""

    state_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    cache_dir: Path = DEFAULT_CACHE_DIR

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()

    @classmethod
    def load(cls, state_dir: Path, *, free_ports: bool = False) -> SwiftAllInOne:
        """The instance saved in `state_dir`, else a new one (on free ports if asked)."""
        path = Path(state_dir) / "swift.json"
        if path.exists():
            raw = json.loads(path.read_text())
            return cls(state_dir=Path(state_dir), host=raw["host"], ports=raw["ports"],
                       cache_dir=Path(raw["cache_dir"]))
        ports = {n: free_port() for n in PORT_NAMES} if free_ports else dict(DEFAULT_PORTS)
        return cls(state_dir=Path(state_dir), ports=ports)

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "swift.json").write_text(json.dumps(
            {"host": self.host, "ports": self.ports, "cache_dir": str(self.cache_dir)}, indent=2))

    # ---- how clients reach it ------------------------------------------------------------------
    def url(self, port_name: str = "proxy") -> str:
        return f"http://{self.host}:{self.ports[port_name]}"

    @property
    def s3_endpoint(self) -> str:
        return self.url("proxy")

    @property
    def tempauth_url(self) -> str:
        return self.url("proxy") + "/auth/v1.0"

    def s3_env(self) -> dict[str, str]:
        """boto3's usual variables for the S3 side (path-style addressing is the client's choice)."""
        return {"AWS_ENDPOINT_URL": self.s3_endpoint, "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": f"{config.TEMPAUTH_ACCOUNT}:{config.TEMPAUTH_USER}",
                "AWS_SECRET_ACCESS_KEY": config.TEMPAUTH_KEY}

    def tempauth_env(self) -> dict[str, str]:
        """The `swift` CLI's (and python-swiftclient's) variables for tempauth."""
        return {"ST_AUTH": self.tempauth_url,
                "ST_USER": f"{config.TEMPAUTH_ACCOUNT}:{config.TEMPAUTH_USER}",
                "ST_KEY": config.TEMPAUTH_KEY}

    # ---- processes -----------------------------------------------------------------------------
    def start(self, keystone: config.KeystoneAuth | None = None, timeout: float = 60) -> None:
        """Start whatever is not running yet and wait until both APIs answer (idempotent)."""
        started = time.monotonic()
        self.save()
        python = venv.ensure(self.cache_dir) / "bin" / "python"
        memcached = shutil.which("memcached")
        if memcached is None:
            raise DevcloudError("memcached is not installed: apt-get install memcached "
                                "(listed in deps/apt-storage.txt; run scripts/bootstrap)")
        etc, srv = self.state_dir / "etc", self.state_dir / "srv"
        config.write_all(etc, srv, self.host, self.ports, f"{self.host}:{self.ports['memcached']}",
                         keystone)
        config.build_rings(python, etc, self.host, self.ports)
        self._spawn("memcached", [memcached, "-l", self.host, "-p", str(self.ports["memcached"]),
                                  "-U", "0", "-m", "64", "-u", "root"])
        bin_dir = python.parent
        for kind in config.STORAGE_SERVERS:
            self._spawn(f"swift-{kind}", [bin_dir / f"swift-{kind}-server",
                                          etc / f"{kind}-server.conf", "--verbose"])
        self._spawn("swift-proxy", [bin_dir / "swift-proxy-server", etc / "proxy-server.conf",
                                    "--verbose"])
        if keystone is not None:
            self._spawn("swift-proxy-keystone", [bin_dir / "swift-proxy-server",
                                                 etc / "proxy-keystone.conf", "--verbose"])
        deadline = time.monotonic() + timeout
        for name, port in (("memcached", "memcached"), ("swift-account", "account"),
                           ("swift-container", "container"), ("swift-object", "object")):
            self._wait_port(name, self.ports[port], deadline)
        self._wait_http("swift-proxy", self.url("proxy") + "/healthcheck", deadline)
        if keystone is not None:
            self._wait_http("swift-proxy-keystone", self.url("proxy_keystone") + "/healthcheck",
                            deadline)
        log.info("swift all-in-one up in %.1f s (%s)", time.monotonic() - started, self.state_dir)

    def stop(self) -> list[str]:
        """Stop every process of this Swift by pid (its data stays for the next start)."""
        return processes.stop_all(self.state_dir)

    def stop_server(self, name: str, timeout: float = 10) -> None:
        """Stop one process (`swift-object`, ...) to make an outage; `start()` brings it back."""
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid(name) is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def pid(self, name: str) -> int | None:
        return processes.running_pid(self.state_dir, name)

    def _spawn(self, name: str, argv: list) -> None:
        if self.pid(name) is None:
            processes.spawn(self.state_dir, name, [str(a) for a in argv],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _died(self, name: str) -> DevcloudError | None:
        if self.pid(name) is not None:
            return None
        time.sleep(0.3)  # a pid file may be rewritten right now
        if self.pid(name) is not None:
            return None
        return DevcloudError(f"{name} exited while starting; see "
                             f"{self.state_dir / 'logs' / (name + '.log')}:\n"
                             + processes.log_tail(self.state_dir, name))

    def _wait_port(self, name: str, port: int, deadline: float) -> None:
        while True:
            try:
                with socket.create_connection((self.host, port), timeout=2):
                    return
            except OSError:
                pass
            self._check(name, deadline, f"{self.host}:{port}")

    def _wait_http(self, name: str, url: str, deadline: float) -> None:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                pass
            self._check(name, deadline, url)

    def _check(self, name: str, deadline: float, what: str) -> None:
        error = self._died(name)
        if error is not None:
            raise error
        if time.monotonic() > deadline:
            raise DevcloudError(f"{name} did not answer on {what} in time; see "
                                f"{self.state_dir / 'logs' / (name + '.log')}")
        time.sleep(0.1)
