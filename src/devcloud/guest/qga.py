"""A small QEMU guest agent client over the host side of the org.qemu.guest_agent.0 channel.

The chardev socket accepts a connection even when no agent runs in the guest, and replies to a
command an earlier client gave up on may still be queued, so every connection starts with
`guest-sync-delimited`: the agent answers with 0xFF then our random id, and whatever came before is
stale. Whether an agent is there at all is better asked of QMP first (`query-chardev` frontend-open).
"""

from __future__ import annotations

import random
import time
from typing import Any

from devcloud.guest.wire import JsonSocket


class AgentError(RuntimeError):
    """The agent answered a command with an error (desc holds the agent's own words)."""

    def __init__(self, command: str, error: dict[str, Any]) -> None:
        self.command = command
        self.error_class = str(error.get("class", ""))
        self.desc = str(error.get("desc", ""))
        super().__init__(f"guest agent {command} failed: {self.desc}")


class AgentTimeout(TimeoutError):
    """The agent did not answer in time (not running, busy, or a frozen guest's hook still runs)."""


class GuestAgentClient:
    def __init__(self, path: str, sync_timeout: float = 5.0) -> None:
        self._wire = JsonSocket(path, connect_timeout=sync_timeout)
        try:
            self.sync(sync_timeout)
        except BaseException:
            self._wire.close()
            raise

    def __enter__(self) -> GuestAgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._wire.close()

    def sync(self, timeout: float) -> None:
        """Discard stale replies: send guest-sync-delimited and read up to the reply carrying our id."""
        token = random.randrange(1, 2**31)
        deadline = time.monotonic() + timeout
        try:
            self._wire.send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
            while True:
                self._wire.skip_past(b"\xff", max(0.0, deadline - time.monotonic()))
                reply = self._wire.read_json(max(0.0, deadline - time.monotonic()))
                if reply.get("return") == token:
                    return
        except OSError as exc:  # WireTimeout, WireClosed, a reset connection
            raise AgentTimeout(f"guest agent did not answer guest-sync-delimited within {timeout:.0f} s") from exc

    def command(self, name: str, timeout: float = 30.0, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        try:
            self._wire.send(message)
            reply = self._wire.read_json(timeout)
        except OSError as exc:  # WireTimeout, WireClosed, a reset connection
            raise AgentTimeout(f"guest agent did not answer {name} within {timeout:.0f} s") from exc
        if "error" in reply:
            raise AgentError(name, reply["error"])
        if "return" not in reply:
            raise AgentError(name, {"desc": f"unexpected reply {reply!r}"})
        return reply["return"]

    def send_only(self, name: str, **arguments: Any) -> None:
        """Send a command without waiting (a thaw after a timed-out freeze: the agent runs it in order)."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        try:
            self._wire.send(message)
        except OSError:
            pass
