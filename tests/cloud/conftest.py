"""A stackvault user against the dev cloud: a config naming the cloud and the proxy server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2e.helpers import Stackvault


class CloudUser(Stackvault):
    """Runs the stackvault CLI with a config file pointing at the dev cloud."""

    def configure(self, devcloud) -> None:
        status = devcloud.status()
        self.config = self.root / "stackvault.toml"
        self.config.write_text(
            "[cloud]\n"
            'os_cloud = "devcloud"\n'
            f'proxy_server = "{status["proxy_server_id"]}"\n'
            f'device_root = "{status["proxy_device_root"]}"\n'
            "timeout = 300\n"
            "parallel = 2\n"
        )
        self.clouds_yaml = devcloud.clouds_yaml

    def env(self) -> dict[str, str]:
        env = super().env()
        env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds_yaml)
        if self.config.exists():  # a proxy being recovered has none yet
            env["STACKVAULT_CONFIG"] = str(self.config)
        return env


@pytest.fixture
def fast_cloud(devcloud):
    """These tests write into servers' disk files as a guest would: only a fast-mode cloud has no
    QEMU holding them (real guests are exercised by the `guest` tier, e.g. test_demo.py)."""
    if not devcloud.ctx.fast:
        pytest.skip("writes disk files directly: needs a fast-mode dev cloud (DEVCLOUD_FAST=1)")
    return devcloud


@pytest.fixture
def user(tmp_path: Path, devcloud) -> CloudUser:
    u = CloudUser(tmp_path / "sv")
    u.configure(devcloud)
    u.run("init", "--block-size", "64KiB")
    return u


@pytest.fixture(scope="session")
def conn(devcloud):
    """An admin connection; the project gets room for the volumes and snapshots these tests make."""
    c = devcloud.connect()
    c.block_storage.update_quota_set(c.current_project_id, volumes=200, snapshots=200, gigabytes=2000)
    return c


@pytest.fixture
def cloud_objects(conn):
    """Servers a test boots are deleted after it (with their volumes), so tests do not fill quotas."""
    servers: list = []
    yield servers
    for server in servers:
        vols = [a.volume_id for a in conn.compute.volume_attachments(server)]
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, wait=120)
        for vol in vols:
            conn.block_storage.delete_volume(vol, ignore_missing=True)


def qemu_io_write(path: Path, fmt: str, offset: int, pattern: int, length: int = 65536) -> None:
    """Write like a guest would, into a disk file of a fast-mode server or volume."""
    subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", str(path)],
                   check=True, capture_output=True)


def raw_copy(path: Path, fmt: str, dest: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(dest)], check=True)
    return dest


def same_disk(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)]).returncode == 0


@pytest.fixture
def faults(devcloud):
    """The dev cloud with no injected API faults before and after the test."""
    devcloud.clear_faults()
    yield devcloud
    devcloud.clear_faults()


class GuestShell:
    """Commands in a real guest through its agent: how a test reads what the guest itself sees."""

    def __init__(self, hv, server_id: str, timeout: float) -> None:
        self.hv, self.server_id, self.timeout = hv, server_id, timeout

    def sh(self, script: str) -> str:
        code, out, err = self.hv.guest_exec(self.server_id, ["/bin/sh", "-c", script], timeout=self.timeout)
        assert code == 0, (script, out, err)
        return out.decode()

    def file_facts(self, path: str) -> tuple[str, int, int]:
        """sha256, mode and mtime of a file as the guest sees it."""
        digest = self.sh(f"sha256sum {path}").split()[0]
        mode, mtime = self.sh(f"stat -c '%a %Y' {path}").split()
        return digest, int(mode, 8), int(mtime)
