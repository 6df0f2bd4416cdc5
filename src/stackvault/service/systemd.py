"""systemd's readiness protocol (`Type=notify`): a datagram to $NOTIFY_SOCKET, nothing without one."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> None:
    """Send `state` (e.g. "READY=1", "RELOADING=1", "STOPPING=1", "STATUS=...") to systemd, if it listens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        pass  # systemd went away: the service goes on
