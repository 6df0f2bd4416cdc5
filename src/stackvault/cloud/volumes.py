"""Reading and writing Cinder volumes from the backup proxy, as the best peers do.

A temporary volume is made from a snapshot and attached to the proxy server; its data then appears as
a block device (`/dev/disk/by-id/virtio-<first 20 characters of the volume id>` on a KVM proxy) that
the engine reads directly, holes and all, at disk speed; or, without a proxy server, uploaded to a
Glance image that is downloaded. Everything is detached and deleted after, also on errors. A restored
volume is made the same way, then untagged (it is the user's) and, for a boot disk, made bootable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from openstack import exceptions as os_exc
from openstack.block_storage.v3.volume import Volume
from openstack.image.v2.image import Image

from ..retrying import first_line
from .connection import CloudError, cloud_call, found, listing_query
from .images import wait_image_active
from .removal import remove
from .servers import find_server_id
from .snapshots import TEMP_KEY, _poll


def get_volume(conn, volume_id: str) -> Volume:
    return cloud_call(f"get volume {volume_id}", lambda: conn.block_storage.get_volume(volume_id))


def visible_volumes(conn, *, all_projects: bool = False, project_id: str | None = None) -> list[Volume]:
    """The volumes the connection's token may see: its project's, or (an admin's) every project's or
    one other project's."""
    query = listing_query(all_projects, project_id)
    return cloud_call("list volumes", lambda: list(conn.block_storage.volumes(**query)))


def volume_exists(conn, name: str) -> bool:
    return found(f"volume {name}", lambda: conn.block_storage.find_volume(name, ignore_missing=True))


def keep_volume(conn, volume_id: str) -> None:
    """Remove the job tag from a volume made with `create_temp_volume`: it is the user's now (a restore)."""
    def untag() -> None:
        try:
            conn.block_storage.delete_volume_metadata(volume_id, keys=[TEMP_KEY])
        except os_exc.NotFoundException:  # the key is gone: an earlier try removed it, its answer lost
            if (get_volume(conn, volume_id).metadata or {}).get(TEMP_KEY) is not None:
                raise

    cloud_call(f"untag volume {volume_id}", untag)


def make_bootable(conn, volume_id: str, image_properties: dict[str, str]) -> None:
    """Mark a volume bootable, with the image metadata Nova reads when it boots from it."""
    cloud_call(f"make volume {volume_id} bootable",
               lambda: conn.block_storage.set_volume_bootable_status(volume_id, True))
    cloud_call(f"set image metadata of volume {volume_id}",
               lambda: conn.block_storage.set_volume_image_metadata(volume_id, **image_properties))


def upload_to_image(conn, volume_id: str, name: str, timeout_s: float, created: Callable[[str], None]) -> Image:
    """Upload a volume's data to a new raw image and wait until Glance has it all; `created(id)` is called
    as soon as the image exists, so that the caller deletes it whatever happens next."""
    try:
        resp = conn.block_storage.upload_volume_to_image(volume_id, name, force=True, disk_format="raw",
                                                         container_format="bare")
    except os_exc.SDKException as exc:
        raise CloudError(f"cannot upload volume {volume_id} to Glance: {first_line(exc)}",
                         "check the volume and image services and their quotas") from None
    image_id = resp.get("image_id") or resp.get("os-volume_upload_image", {}).get("image_id")
    created(image_id)
    return wait_image_active(conn, image_id, timeout_s)


def wait_volume(conn, volume_id: str, status: str, timeout_s: float) -> Volume:
    def ready():
        vol = get_volume(conn, volume_id)
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
    proxy = find_server_id(conn, proxy_server)
    if proxy is None:
        raise CloudError(f"the proxy server {proxy_server!r} does not exist in this project",
                         "set proxy_server in [cloud] to the name or id of the server stackvault runs on")
    proxy_server = proxy
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
