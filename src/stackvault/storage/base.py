"""The storage interface and the function that picks a backend from a repository location."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float


class Backend(abc.ABC):
    """A flat namespace of immutable-ish objects. Every `put` is atomic: readers see all or nothing."""

    location: str

    @abc.abstractmethod
    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store `data` under `key`, replacing any object there, atomically."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object's bytes; raise `KeyError(key)` when it does not exist."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error (deletes are retried)."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in no particular order."""

    def sync(self) -> None:
        """Make every `put` so far durable. Called before a manifest commits (per-job sync level)."""

    def close(self) -> None:
        """Release connections and file handles."""


def open_backend(location: str, *, sync: str = "job") -> Backend:
    """Backend for a repository location: a path (local directory) or, later, s3:// / swift:// URLs."""
    if "://" in location and not location.startswith("file://"):
        scheme = location.split("://", 1)[0]
        if scheme == "memory":
            from .memory import MemoryBackend

            return MemoryBackend(location)
        raise UsageError(
            f"repository location {location!r} uses unsupported scheme {scheme!r}",
            "use a local directory path; s3:// and swift:// repositories are not available yet",
        )
    from .local import LocalBackend

    return LocalBackend(location.removeprefix("file://"), sync=sync)
