"""Retries around any backend (as restic's backend/retry), under the project's one retry policy.

Only `TransientError` is retried: drivers decide what is transient (5xx answers, timeouts, refused
or reset connections), `stackvault.retrying` decides how often and how long to wait (exponential
backoff with full jitter). Every call the engine makes is safe to repeat: a PUT replaces the whole
object, a DELETE of a missing object succeeds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

from ..retrying import SERVICE
from .base import Backend, BackendWrapper, ObjectInfo, TransientError

T = TypeVar("T")


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, TransientError) else str(exc)


class RetryingBackend(BackendWrapper):
    """`attempts` tries per call, sleeping up to base * 2**n seconds (capped at `max_delay`) between."""

    def __init__(self, inner: Backend, *, attempts: int | None = None, base_delay: float | None = None,
                 max_delay: float | None = None, sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        """Each of `attempts`, `base_delay` and `max_delay` left out is the policy's for every service."""
        super().__init__(inner)
        self.policy = replace(SERVICE, attempts=max(1, attempts if attempts is not None else SERVICE.attempts or 1),
                              first_delay_s=SERVICE.first_delay_s if base_delay is None else base_delay,
                              max_delay_s=SERVICE.max_delay_s if max_delay is None else max_delay)
        self._sleep = sleep
        self._rng = rng
        self.retries = 0  # calls repeated so far, for tests and metrics

    @property
    def attempts(self) -> int:
        return self.policy.attempts or 1  # set in __init__: never None here

    @attempts.setter
    def attempts(self, attempts: int) -> None:
        """More or fewer tries for this backend from now on (the policy is what `_call` obeys)."""
        self.policy = replace(self.policy, attempts=max(1, attempts))

    def _counted(self) -> None:
        self.retries += 1

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return self.policy.call(what, fn, _transient, describe=_message, sleep=self._sleep, rng=self._rng,
                                    on_retry=self._counted)
        except TransientError as exc:
            raise TransientError(f"{exc.message} (gave up after {self.attempts} attempts)", exc.fix) from exc
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data))

    def get(self, key: str, max_size: int | None = None) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key, max_size))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get_range(key, offset, length))

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
