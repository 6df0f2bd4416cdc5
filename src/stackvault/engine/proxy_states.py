"""Saved proxy state as repository objects (`proxy-state/<time>.tar.zst`).

The proxy's working state and configuration (jobs/proxy_state.py makes and reads the archive) are
kept in the repository they belong to, so that a new proxy needs nothing but its location and
credentials. Here is only where those archives lie and how they are listed; the ids are UTC times
(`YYYYmmddTHHMMSSZ`), so they sort oldest first.
"""

from __future__ import annotations

from ..storage import Backend
from .layout import PROXY_STATE, proxy_state_id_of, proxy_state_key


class SavedProxyStates:
    """The saved proxy states of one repository (`Repository.proxy_states`)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def save(self, state_id: str, blob: bytes) -> None:
        """Store one saved state, durably."""
        self._backend.put(proxy_state_key(state_id), blob)
        self._backend.sync()

    def ids(self) -> list[str]:
        """Every saved state's id, oldest first."""
        ids = (proxy_state_id_of(obj.key) for obj in self._backend.list(PROXY_STATE))
        return sorted(i for i in ids if i is not None)

    def read(self, state_id: str, max_size: int) -> bytes:
        """A saved state's bytes; KeyError when there is none, ObjectTooLargeError over `max_size`."""
        return self._backend.get(proxy_state_key(state_id), max_size)
