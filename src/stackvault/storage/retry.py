"""Retries with exponential backoff and full jitter, around any backend (as restic's backend/retry).

Only `TransientError` is retried: drivers decide what is transient (5xx answers, timeouts, refused
or reset connections), this wrapper decides how often and how long to wait. Every call the engine
makes is safe to repeat: a PUT replaces the whole object, a DELETE of a missing object succeeds.
Jitter keeps the upload workers of one or several proxies from retrying in lockstep against a store
that is already overloaded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from .base import Backend, BackendWrapper, ObjectInfo, TransientError

log = logging.getLogger("stackvault.storage")

T = TypeVar("T")


class RetryingBackend(BackendWrapper):
    """`attempts` tries per call, sleeping up to base * 2**n seconds (capped at `max_delay`) between."""

    def __init__(self, inner: Backend, *, attempts: int = 6, base_delay: float = 0.25,
                 max_delay: float = 8.0, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        super().__init__(inner)
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng
        self.retries = 0  # calls repeated so far, for tests and metrics

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientError as exc:
                if attempt == self.attempts:
                    raise TransientError(f"{exc.message} (gave up after {attempt} attempts)",
                                         exc.fix) from exc
                delay = self._rng() * min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                log.warning("%s: %s; retry %d of %d in %.2f s", what, exc.message, attempt,
                            self.attempts - 1, delay)
                self.retries += 1
                self._sleep(delay)
        raise AssertionError("unreachable")

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data))

    def get(self, key: str, max_size: int | None = None) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key, max_size))

    def exists(self, key: str) -> bool:
        return self._call(f"exists {key}", lambda: self.inner.exists(key))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.inner.delete(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # A listing that breaks halfway is started again: collect it whole within one attempt.
        return iter(self._call(f"list {prefix}", lambda: list(self.inner.list(prefix))))

    def sync(self) -> None:
        self._call("sync", self.inner.sync)

    def create(self) -> None:
        self._call("create", self.inner.create)
