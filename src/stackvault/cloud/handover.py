"""Handing a restored volume from the proxy's project to the project it is restored for.

A volume is written through an attachment to the proxy's own server, so it is made in the proxy's
project; Nova cannot attach another project's volume there. Once written, Cinder's volume transfer
moves it: the proxy's project offers it, the target project accepts it with its own credentials (a
Keystone trust of the user who asked for the restore), so it ends where that user may see it and
nowhere else.
"""

from __future__ import annotations

from openstack import exceptions as os_exc

from ..retrying import first_line
from .connection import CloudError


def hand_over_volume(source, target, volume_id: str) -> None:
    """Transfer `volume_id` from `source`'s project to `target`'s (both openstacksdk connections).
    Not retried: a second offer of the same volume is refused while the first one stands."""
    try:
        transfer = source.block_storage.create_transfer(volume_id=volume_id, name=f"stackvault restore {volume_id}")
    except os_exc.SDKException as exc:
        raise CloudError(f"offering volume {volume_id} to project {target.current_project_id} failed: "
                         f"{first_line(exc)}", "check that Cinder's policy allows volume transfers") from None
    try:
        target.block_storage.accept_transfer(transfer.id, transfer.auth_key)
    except os_exc.SDKException as exc:
        source.block_storage.delete_transfer(transfer, ignore_missing=True)
        raise CloudError(f"project {target.current_project_id} could not accept volume {volume_id}: "
                         f"{first_line(exc)}", "check the project's volume quota") from None
