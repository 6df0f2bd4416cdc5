"""An in-memory backend: the storage conformance tests run against it, as restic's do."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from .base import Backend, ObjectInfo, check_size


class MemoryBackend(Backend):
    def __init__(self, location: str = "memory://") -> None:
        self.location = location
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            self._objects[key] = (bytes(data), time.time())

    def get(self, key: str, max_size: int | None = None) -> bytes:
        with self._lock:
            data = self._objects[key][0]
        check_size(key, len(data), max_size)
        return data

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._objects

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [(k, v) for k, v in self._objects.items() if k.startswith(prefix)]
        for key, (data, mtime) in items:
            yield ObjectInfo(key, len(data), mtime)
