"""pytest plugin: the session fixture `devcloud`, a whole dev cloud for one test session.

Enable with `pytest_plugins = ["devcloud.pytest_plugin"]` in a conftest.py.

By default each session gets a fresh cloud in a slot dir `<repo>/.state/test-cloud-<N>` (the first
slot no other running session holds, via a lock file), on free ports, and every process of it is
stopped at the end of the session, even after failures or Ctrl-C. Leftover processes of a crashed
earlier session in that slot are stopped first. Slots keep paths short (QMP/QGA unix socket paths
must stay under 108 characters) and make leftovers findable.

`DEVCLOUD_STATE=<dir>` uses that cloud instead: started if needed, left running at the end if it
was already up (run `devcloud up` once, then iterate on tests quickly). `DEVCLOUD_KEEP=1` leaves a
per-session cloud running too. `DEVCLOUD_FAST=1` starts it in fast mode (no VMs);
`DEVCLOUD_SKIP` skips parts as `devcloud up --skip` does. A cloud with real guests has the
single-node Ceph and Cinder's RBD backend, as `devcloud up` does by default; a fast one has not (the
default test tier's clouds stay cheap); `DEVCLOUD_CEPH=1` or `0` says so for both.

The session fixture `devcloud_ceph` is a cloud with Ceph for the tests that need one: the
`devcloud` cloud itself when it has Ceph (or a reused `DEVCLOUD_STATE` cloud has Ceph),
else a second cloud of its own in another slot, whole (Nova attaches and boots RBD volumes, so
servers on Ceph need it; `DEVCLOUD_SKIP` applies) and fast or not as `devcloud` is, so sessions
without Ceph tests pay nothing for it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from devcloud import cloud, faults, processes
from devcloud.context import REPO_ROOT, CloudContext, DevcloudError, free_ports

SLOT_ROOT = REPO_ROOT / ".state"
MAX_SLOTS = 8


@dataclass
class DevCloud:
    """What a test gets: where the cloud is and ways to drive it."""

    ctx: CloudContext
    cloud: str = "devcloud"
    skip: frozenset[str] = frozenset()  # parts `up` left out (an `up` in a test passes them on)

    @property
    def state_dir(self) -> Path:
        return self.ctx.state_dir

    @property
    def clouds_yaml(self) -> Path:
        return self.ctx.clouds_yaml

    def status(self) -> dict[str, Any]:
        """Same as `devcloud status --json`."""
        return cloud.status(self.ctx)

    def env(self, cloud_name: str | None = None) -> dict[str, str]:
        """Environment for OpenStack clients: OS_CLIENT_CONFIG_FILE and OS_CLOUD."""
        return {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml),
                "OS_CLOUD": cloud_name or self.cloud}

    def connect(self, cloud_name: str | None = None) -> Any:
        """An openstacksdk Connection to this cloud (needs openstacksdk in the test venv)."""
        try:
            import openstack
        except ImportError as exc:
            raise DevcloudError(
                "openstacksdk is not installed in this virtualenv: pin openstacksdk==4.22.0 "
                "in pyproject.toml, or drive the cloud with devcloud.run_python()") from exc
        from openstack import config as os_config

        region = os_config.OpenStackConfig(config_files=[str(self.clouds_yaml)]).get_one(
            cloud=cloud_name or self.cloud)
        return openstack.connection.Connection(config=region)

    def openstack(self, *args: str, check: bool = True, cloud_name: str | None = None,
                  timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real `openstack` CLI (python-openstackclient of the services venv)."""
        return subprocess.run([str(self.ctx.services_bin("openstack")), *args],
                              env=self.env(cloud_name), capture_output=True, text=True,
                              check=check, timeout=timeout)

    def run_python(self, code: str, *args: str, stdin: IO[bytes] | None = None,
                   check: bool = True, timeout: float = 600,
                   cloud_name: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run Python code in the services venv (openstacksdk available), OS_CLOUD set."""
        return subprocess.run([str(self.ctx.services_python), "-c", code, *args],
                              env=self.env(cloud_name), capture_output=True, text=True,
                              check=check, timeout=timeout)

    def add_fault(self, service: str, kind: str, value: float = 0, *, method: str | None = None,
                  path_regex: str | None = None, count: int | None = None) -> faults.FaultRule:
        """Add a fault rule (see devcloud.faults); `clear_faults()` removes them all."""
        return faults.add(self.state_dir, faults.FaultRule(
            service=service, kind=kind, value=value, method=method, path_regex=path_regex,
            count=count))

    def clear_faults(self) -> None:
        faults.clear(self.state_dir)


def _claim_slot() -> tuple[Path, IO[str]]:
    """The first state-dir slot no running session holds, locked for this session."""
    try:
        return processes.claim_slot(SLOT_ROOT, "test-cloud", MAX_SLOTS)
    except RuntimeError as exc:
        raise DevcloudError(str(exc)) from None


def _wants_ceph() -> bool:
    """$DEVCLOUD_CEPH when set; else Ceph with real guests (as `devcloud up`), none in fast mode: the
    default test tier's clouds stay as cheap as they were, and its Ceph tests get a cloud of their own."""
    said = os.environ.get("DEVCLOUD_CEPH", "").lower()
    if said in ("1", "yes", "true", "0", "no", "false"):
        return said in ("1", "yes", "true")
    return not _wants_fast()


def _wants_fast() -> bool:
    return os.environ.get("DEVCLOUD_FAST", "") in ("1", "yes", "true")


def _fresh_context(state_dir: Path, ceph: bool = False) -> CloudContext:
    """Stop leftovers of a crashed earlier session in this slot, then start from empty."""
    processes.stop_all(state_dir)
    if state_dir.exists():
        shutil.rmtree(state_dir)
    names = ("keystone", "glance", "cinder", "nova", "neutron")
    both = free_ports(list(names) + [f"{n}-backend" for n in names])
    ctx = CloudContext(state_dir=state_dir, ports={n: both[n] for n in names},
                       backend_ports={n: both[f"{n}-backend"] for n in names})
    ctx.fast = _wants_fast()
    ctx.ceph = ceph
    return ctx


def _running(ctx: CloudContext) -> bool:
    report = cloud.status(ctx)
    return all(report["services"][s]["running"] for s in ("keystone", "glance", "faultproxy"))


def _session_cloud(reuse: CloudContext | None, ceph: bool,
                   skip: set[str]) -> Iterator[DevCloud]:
    """Up a cloud (`reuse`, or a fresh one in a free slot), yield it, stop it at the end."""
    lock: IO[str] | None = None
    if reuse is not None:
        ctx = reuse
        stop_at_end = not _running(ctx)
    else:
        state_dir, lock = _claim_slot()
        ctx = _fresh_context(state_dir, ceph)
        stop_at_end = os.environ.get("DEVCLOUD_KEEP", "") not in ("1", "yes", "true")

    def stop() -> None:
        if stop_at_end:
            cloud.down(ctx.state_dir)

    try:
        with processes.stopped_at_exit(stop):  # also if the session dies or gets SIGTERM
            cloud.up(ctx, skip=skip)
            yield DevCloud(ctx=ctx, skip=frozenset(skip))
    finally:
        if lock is not None:
            lock.close()


def _reused() -> CloudContext | None:
    reuse = os.environ.get("DEVCLOUD_STATE")
    return CloudContext.load(Path(reuse)) if reuse else None


@pytest.fixture(scope="session")
def devcloud() -> Iterator[DevCloud]:
    """A running dev cloud for the whole session; all its processes stop at the end."""
    yield from _session_cloud(_reused(), _wants_ceph(), cloud.skipped_parts())


@pytest.fixture(scope="session")
def devcloud_ceph(request: pytest.FixtureRequest) -> Iterator[DevCloud]:
    """A running dev cloud with Ceph (see the module docstring for which one)."""
    reuse = _reused()
    if reuse.ceph if reuse is not None else _wants_ceph():
        yield request.getfixturevalue("devcloud")
        return
    yield from _session_cloud(None, True, cloud.skipped_parts())


def status_json(dc: DevCloud) -> dict[str, Any]:
    """`devcloud status --json` run as a user would (through the CLI module)."""
    out = subprocess.run([sys.executable, "-m", "devcloud", "--state-dir", str(dc.state_dir),
                          "status", "--json"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    return json.loads(out.stdout)
