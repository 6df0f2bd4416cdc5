"""Glance images a job makes, reads or marks: restored disks, volumes uploaded for reading, and the
quiesce properties `doctor --fix-images` sets.

Waiting for an image is openstacksdk's waiter (`wait_for_status`); calls that are safe to repeat go
through the one retry policy (`connection.cloud_call`); the SDK's errors leave this module as
`CloudError`s that name the image and the fix.
"""

from __future__ import annotations

from openstack import exceptions as os_exc
from openstack.image.v2.image import Image

from ..retrying import first_line
from .connection import CloudError, cloud_call, found

#: Seconds between two looks at an image being uploaded: an upload takes a while, asking often only loads Glance.
WAIT_INTERVAL_S = 1.0


def image_exists(conn, name: str) -> bool:
    return found(f"image {name}", lambda: conn.image.find_image(name, ignore_missing=True))


def wait_image_active(conn, image_id: str, timeout_s: float) -> Image:
    """The image once Glance says it is active; a CloudError when it was killed, deleted, or took too long."""
    try:
        image = cloud_call(f"get image {image_id}", lambda: conn.image.get_image(image_id))
        return conn.image.wait_for_status(image, status="active", failures=["killed", "deleted"],
                                          interval=WAIT_INTERVAL_S, wait=timeout_s)
    except os_exc.ResourceTimeout:
        raise CloudError(f"timed out after {timeout_s:.0f} s waiting for Glance image {image_id} to become active",
                         "raise the timeout (--timeout / [cloud] timeout) or check the image service") from None
    except os_exc.SDKException as exc:
        raise CloudError(f"Glance image {image_id} did not become active: {first_line(exc)}",
                         "check the image service") from None


def upload_image(conn, name: str, path: str, *, disk_format: str, properties: dict[str, str], what: str,
                 timeout_s: float) -> str:
    """Upload the file at `path` as a new image and wait until it is active; its id.

    `what` names the data for the error (`restored disk vda`). Not retried: a second try could leave two
    images of one name, and a failure here is the restore's to report."""
    try:
        image = conn.image.create_image(name=name, filename=path, disk_format=disk_format, container_format="bare",
                                        wait=True, timeout=timeout_s, **properties)
    except os_exc.SDKException as exc:
        raise CloudError(f"upload of {what} to Glance failed: {first_line(exc)}",
                         "check the image service and quota, then retry") from None
    return image.id


def set_image_properties(conn, image_id: str, properties: dict[str, str]) -> None:
    """Set properties on an image; a CloudError with Glance's reason (often: not the image's owner)."""
    try:
        cloud_call(f"update image {image_id}", lambda: conn.image.update_image(image_id, **properties))
    except os_exc.SDKException as exc:
        raise CloudError(first_line(exc), "ask the image's owner or an admin") from None

