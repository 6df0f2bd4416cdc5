"""Reading and writing Cinder volumes from the backup proxy, as the best peers do.

A temporary volume is made from a snapshot and attached to the proxy server; its data then appears as
a block device (`/dev/disk/by-id/virtio-<first 20 characters of the volume id>` on a KVM proxy) that
the engine reads directly, holes and all, at disk speed. Everything is detached and deleted after,
also on errors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from openstack import exceptions as os_exc
from openstack.block_storage.v3.volume import Volume

from ..retrying import first_line
from .connection import CloudError
from .removal import remove
from .snapshots import TEMP_KEY, _poll


def wait_volume(conn, volume_id: str, status: str, timeout_s: float) -> Volume:
    def ready():
        vol = conn.block_storage.get_volume(volume_id)
        if vol.status in ("error", "error_restoring", "error_extending") and status != vol.status:
            raise CloudError(f"volume {volume_id} went to {vol.status}", "check the volume service")
        return vol if vol.status == status else None

    return _poll(f"volume {volume_id} to become {status}", timeout_s, ready)


def create_temp_volume(conn, job_id: str, *, size_gb: int, name: str, snapshot_id: str | None = None,
                       timeout_s: float, **extra) -> Volume:
    try:
        vol = conn.block_storage.create_volume(size=size_gb, name=name, snapshot_id=snapshot_id,
                                               metadata={TEMP_KEY: job_id}, **extra)
    except os_exc.HttpException as exc:
        raise CloudError(f"cannot create volume {name}: {first_line(exc)}",
                         "check the volume quota and the volume service") from None
    try:
        return wait_volume(conn, vol.id, "available", timeout_s)
    except BaseException:
        delete_volume(conn, vol.id, timeout_s)
        raise


def delete_volume(conn, volume_id: str, timeout_s: float = 300, leftovers: list[str] | None = None) -> None:
    def delete() -> None:
        conn.block_storage.delete_volume(volume_id, ignore_missing=True)
        _poll(f"the deletion of volume {volume_id}", timeout_s,
              lambda: True if conn.block_storage.find_volume(volume_id, ignore_missing=True) is None else None)

    remove(f"volume {volume_id}", delete, leftovers)


def device_path(device_root: str, volume_id: str) -> str:
    return os.path.join(device_root, f"virtio-{volume_id[:20]}")


@contextlib.contextmanager
def attached_to_proxy(conn, volume_id: str, proxy_server: str, device_root: str, timeout_s: float) -> Iterator[str]:
    """Attach a volume to the proxy server; yields the path of its block device."""
    proxy = conn.compute.find_server(proxy_server, ignore_missing=True)
    if proxy is None:
        raise CloudError(f"the proxy server {proxy_server!r} does not exist in this project",
                         "set proxy_server in [cloud] to the name or id of the server stackvault runs on")
    proxy_server = proxy.id
    try:
        conn.compute.create_volume_attachment(proxy_server, volume=volume_id)
    except os_exc.HttpException as exc:
        raise CloudError(f"cannot attach volume {volume_id} to the proxy server {proxy_server}: {first_line(exc)}",
                         "check `proxy_server` in the config names this proxy's server") from None
    try:
        wait_volume(conn, volume_id, "in-use", timeout_s)
        path = device_path(device_root, volume_id)
        _poll(f"device {path} of volume {volume_id}", timeout_s, lambda: path if os.path.exists(path) else None)
        yield path
    finally:
        try:
            conn.compute.delete_volume_attachment(proxy_server, volume_id)
            wait_volume(conn, volume_id, "available", timeout_s)
        except (os_exc.SDKException, CloudError):
            pass  # deleting the volume next retries; cleanup finds leftovers
