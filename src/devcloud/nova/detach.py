"""Detaching a disk from a live guest as Nova's libvirt driver does: the unplug is a request
the guest must acknowledge, so it is sent again until the guest lets go or the attempts run out.

Kept apart from the API module so the retry loop can be tested on its own.
"""

from __future__ import annotations

import logging
from typing import Any

from devcloud.nova.compute import GuestError, NovaError

LOG = logging.getLogger(__name__)


class DeviceDetachFailed(NovaError):
    def __init__(self, server_id: str, target: str):
        super().__init__(f"Device detach failed for {target}: Run out of retry while detaching "
                         f"device {target} from instance {server_id} from the live domain "
                         "config. Device is still attached to the guest.")


def unplug_with_retries(hypervisor: Any, server_id: str, target: str, attempts: int,
                        interval: float) -> int:
    """LibvirtDriver._detach_with_retry: send the unplug, wait `interval` for the guest to let
    go, send it again, `attempts` times in all. A guest still booting ignores the first ACPI
    unplug request; one that stopped meanwhile is detached from its config alone. Returns the
    attempt that succeeded; DeviceDetachFailed when none did (the volume stays in-use)."""
    for attempt in range(1, attempts + 1):
        try:
            hypervisor.detach_disk(server_id, target, timeout=interval)
            return attempt
        except GuestError as exc:
            LOG.info("detach of %s from %s: attempt %d of %d: %s", target, server_id, attempt,
                     attempts, exc)
    raise DeviceDetachFailed(server_id, target)
