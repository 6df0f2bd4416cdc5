"""Volume detach re-sends the unplug as Nova's libvirt driver does (device_detach_attempts x
device_detach_timeout), so a guest that ignored the first request (still booting) lets the volume
go on a later one instead of keeping it in-use forever.

The unit tests drive the retry loop with a guest that refuses a given number of times; the guest
test does it with a real QEMU guest that is still booting when the detach comes."""

from __future__ import annotations

import pytest

from devcloud.guest.hypervisor import GuestError
from devcloud.nova.detach import DeviceDetachFailed, unplug_with_retries
from devcloud.nova.testing import IMAGE_AGENT, cli_json, delete_server, wait_for


class SlowToReleaseGuest:
    """A guest that ignores the first `ignored` unplug requests, as one still booting does."""

    def __init__(self, ignored: int):
        self.ignored = ignored
        self.requests: list[tuple[str, float]] = []

    def detach_disk(self, uuid: str, target: str, timeout: float = 30) -> None:
        self.requests.append((target, timeout))
        if len(self.requests) <= self.ignored:
            raise GuestError(f"server {uuid} did not release disk {target} within {timeout:.0f} s")


def test_unplug_is_sent_again_until_the_guest_lets_go():
    guest = SlowToReleaseGuest(ignored=2)
    assert unplug_with_retries(guest, "srv", "vdb", attempts=8, interval=0.01) == 3
    assert guest.requests == [("vdb", 0.01)] * 3


def test_unplug_gives_up_after_the_configured_attempts():
    guest = SlowToReleaseGuest(ignored=99)
    with pytest.raises(DeviceDetachFailed, match="Run out of retry while detaching device vdb"):
        unplug_with_retries(guest, "srv", "vdb", attempts=4, interval=0.01)
    assert len(guest.requests) == 4


@pytest.mark.devcloud
@pytest.mark.guest
@pytest.mark.slow
def test_a_volume_detached_from_a_booting_guest_becomes_available(devcloud):
    if devcloud.ctx.fast:
        pytest.skip("needs a real guest that is still booting")
    server = cli_json(devcloud, "server", "create", "--image", IMAGE_AGENT, "--flavor", "m1.tiny",
                      "--network", "private", "--wait", "t-detach-booting")
    vol = cli_json(devcloud, "volume", "create", "--size", "1", "t-detach-vol")
    try:
        wait_for("volume available", lambda: cli_json(devcloud, "volume", "show", vol["id"])[
            "status"] == "available", 120)
        devcloud.openstack("server", "add", "volume", server["id"], vol["id"])
        wait_for("volume in-use", lambda: cli_json(devcloud, "volume", "show", vol["id"])[
            "status"] == "in-use", 120)
        devcloud.openstack("server", "reboot", "--hard", server["id"])  # booting again now
        wait_for("reboot accepted", lambda: cli_json(devcloud, "server", "show", server["id"])[
            "status"] == "ACTIVE", 120)
        devcloud.openstack("server", "remove", "volume", server["id"], vol["id"])
        wait_for("volume available", lambda: cli_json(devcloud, "volume", "show", vol["id"])[
            "status"] == "available", 300)
    finally:
        delete_server(devcloud, server["id"])
        devcloud.openstack("volume", "delete", vol["id"], check=False)

