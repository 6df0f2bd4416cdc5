"""A small QMP client: commands, and waiting for events such as BLOCK_JOB_COMPLETED.

QMP serves one client at a time, so callers hold a connection only for one operation (the
Hypervisor serialises them per guest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from devcloud.guest.wire import JsonSocket, WireTimeout


class QMPError(RuntimeError):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.command = command
        self.error_class = str(error.get("class", ""))
        self.desc = str(error.get("desc", ""))
        super().__init__(f"QMP {command} failed: {self.desc} ({self.error_class})")


class QMPClient:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._wire = JsonSocket(path, connect_timeout=timeout)
        try:
            greeting = self._wire.read_json(timeout)
            if "QMP" not in greeting:
                raise QMPError("greeting", {"desc": f"unexpected greeting {greeting!r}"})
            self.command("qmp_capabilities")
        except BaseException:
            self._wire.close()
            raise

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._wire.close()

    def command(self, name: str, timeout: float | None = None, **arguments: Any) -> Any:
        """Run one command and return its "return" value; events arriving meanwhile are kept."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        self._wire.send(message)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._wire.read_json(max(0.0, deadline - time.monotonic()))
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise QMPError(name, reply["error"])
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name: str, timeout: float,
                   match: Callable[[dict[str, Any]], bool] = lambda event: True) -> dict[str, Any]:
        """The first event `name` (already received or arriving within timeout) for which match() holds."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("event") == name and match(event):
                    return self.events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WireTimeout(f"QMP event {name} did not arrive within {timeout:.0f} s")
            reply = self._wire.read_json(remaining)
            if "event" in reply:
                self.events.append(reply)
