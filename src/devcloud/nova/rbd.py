"""Cinder volumes on Ceph RBD, connected as Nova's libvirt driver and os-brick connect them.

Cinder's RBD driver answers `initialize_connection` with `driver_volume_type: rbd` and no local
device: `data.name` is `<pool>/volume-<id>`, `hosts`/`ports` the monitors, `auth_username` the
cephx user. A guest reaches such a volume through QEMU's own rbd driver (libvirt's `<disk
type='network' protocol='rbd'>`), never through a host block device; the cephx key comes from the
compute host (libvirt's secret there, the keyring that this host's ceph.conf names here).

The backup proxy has no QEMU between it and the volume: a real proxy VM sees a virtio disk. Here
the volume becomes a file through `rbd-fuse` (one mount per attached volume, the image alone),
and the proxy's /dev/disk/by-id style symlink points at that file, so stackvault's attach path
reads and writes it as it does a file-backed volume.

Standard library only: it runs inside the Nova process and in `devcloud down`.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

RBD_FUSE = "rbd-fuse"
FUSE_TYPE = "fuse.rbd-fuse"


class RbdConnectError(Exception):
    """The RBD volume could not be connected; the message says what and why."""


def is_rbd(connection_info: dict[str, Any]) -> bool:
    return connection_info.get("driver_volume_type") == "rbd"


def source(connection_info: dict[str, Any], conf: str) -> dict[str, Any]:
    """The hypervisor's RBD disk source from Cinder's connection info (`conf`: this host's
    ceph.conf, through which librbd finds the user's keyring)."""
    data = connection_info.get("data") or connection_info  # the attachments API flattens `data`
    name = data.get("name") or ""
    if "/" not in name:
        raise RbdConnectError(f"RBD connection info without a `pool/image` name: {data}")
    if not conf:
        raise RbdConnectError("this compute host has no ceph.conf (the dev cloud runs without "
                              "Ceph): it cannot connect RBD volumes")
    pool, image = name.split("/", 1)
    hosts, ports = data.get("hosts") or [], data.get("ports") or []
    servers = [{"host": h, "port": str(p)} for h, p in zip(hosts, ports, strict=False)]
    return {"pool": pool, "image": image, "user": data.get("auth_username") or "admin",
            "conf": conf, "servers": servers}


def display_path(rbd: dict[str, Any]) -> str:
    """What Nova shows as the volume's "device": the image's name, not a host path."""
    return f"rbd:{rbd['pool']}/{rbd['image']}"


def fuse_mountpoint(nova_dir: Path, volume_id: str) -> Path:
    return Path(nova_dir) / "rbd-fuse" / volume_id


def fuse_attach(nova_dir: Path, volume_id: str, rbd: dict[str, Any], timeout: float = 30) -> Path:
    """Mount the one image with rbd-fuse and return the file that stands for the volume."""
    mount = fuse_mountpoint(nova_dir, volume_id)
    device = mount / rbd["image"]
    if _mounted(mount):
        if device.exists():
            return device
        fuse_detach(nova_dir, volume_id)
    mount.mkdir(parents=True, exist_ok=True)
    argv = [RBD_FUSE, "-c", str(rbd["conf"]), "--id", rbd["user"], "-p", rbd["pool"],
            "-r", rbd["image"], str(mount)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise RbdConnectError(f"{RBD_FUSE} not found: install the Debian packages in "
                              "deps/apt-ceph.txt") from exc
    except subprocess.TimeoutExpired as exc:
        raise RbdConnectError(f"{RBD_FUSE} did not mount {rbd['image']} within {timeout:.0f} s")\
            from exc
    if done.returncode != 0:
        raise RbdConnectError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    deadline = time.monotonic() + timeout
    while not device.exists():
        if time.monotonic() > deadline:
            fuse_detach(nova_dir, volume_id)
            raise RbdConnectError(f"{RBD_FUSE} mounted {mount} but shows no {rbd['image']}")
        time.sleep(0.1)
    return device


def fuse_detach(nova_dir: Path, volume_id: str) -> None:
    """Unmount the volume's rbd-fuse (its daemon exits with it); lazily when still busy."""
    mount = fuse_mountpoint(nova_dir, volume_id)
    _unmount(mount)
    try:
        mount.rmdir()
    except OSError:
        pass


def unmount_all(root: Path) -> list[str]:
    """Unmount every rbd-fuse mount under `root` (a state dir): before its Ceph stops, or the
    daemons would wait on a vanished cluster and every access to their files would hang."""
    done = []
    for mount in _fuse_mounts():
        if mount == Path(root).resolve() or Path(root).resolve() in mount.parents:
            _unmount(mount)
            done.append(str(mount))
    return done


def _unmount(mount: Path) -> None:
    if not _mounted(mount):
        return
    # fusermount is not installed here and the dev cloud runs as root: plain umount does.
    for argv in (["umount", str(mount)], ["umount", "-l", str(mount)]):
        if subprocess.run(argv, capture_output=True, text=True).returncode == 0:
            return
    LOG.warning("could not unmount %s", mount)


def _mounted(mount: Path) -> bool:
    return Path(mount).resolve() in _fuse_mounts()


def _fuse_mounts() -> list[Path]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and (fields[2] == FUSE_TYPE or fields[0] == RBD_FUSE):
            out.append(Path(fields[1].replace("\\040", " ")))
    return out
