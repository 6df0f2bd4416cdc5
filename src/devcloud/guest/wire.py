"""Newline-delimited JSON over a unix socket, the framing QMP and the guest agent share.

Our own buffer instead of `socket.makefile`: a buffered file is unusable after one read timeout,
and both protocols need to time out, then keep reading (or send a thaw) on the same connection.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class WireTimeout(TimeoutError):
    """Nothing (or not enough) arrived before the deadline."""


class WireClosed(ConnectionError):
    """The peer closed the connection."""


class JsonSocket:
    """One connection to a QEMU unix socket (QMP or a guest agent chardev)."""

    def __init__(self, path: str, connect_timeout: float = 5.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(connect_timeout)
        try:
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            raise
        self._buffer = bytearray()

    def send(self, message: dict[str, Any]) -> None:
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON object; blank lines and undecodable garbage (stale partial replies) are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_until(b"\n", deadline).strip().lstrip(b"\xff")
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value

    def skip_past(self, marker: bytes, timeout: float) -> None:
        """Drop everything up to and including `marker` (the guest agent's 0xFF sync delimiter)."""
        self._read_until(marker, time.monotonic() + timeout)

    def close(self) -> None:
        self._sock.close()

    def _read_until(self, marker: bytes, deadline: float) -> bytes:
        while True:
            index = self._buffer.find(marker)
            if index >= 0:
                chunk = bytes(self._buffer[: index + len(marker)])
                del self._buffer[: index + len(marker)]
                return chunk
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WireTimeout(f"no reply on {self.path} in time")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65536)
            except TimeoutError as exc:
                raise WireTimeout(f"no reply on {self.path} in time") from exc
            if not data:
                raise WireClosed(f"{self.path} closed the connection")
            self._buffer += data
