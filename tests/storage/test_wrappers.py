"""The retry and fault-injection wrappers, over the in-memory backend (no store needed)."""

from __future__ import annotations

import time

import pytest

from stackvault.errors import RepositoryError
from stackvault.storage.base import TransientError
from stackvault.storage.faulty import FaultyBackend, parse
from stackvault.storage.memory import MemoryBackend
from stackvault.storage.retry import RetryingBackend


def stack(spec: str, attempts: int = 4) -> tuple[RetryingBackend, FaultyBackend, list[float]]:
    """Retrying(Faulty(Memory)) as open_backend builds it for an object store; sleeps recorded."""
    slept: list[float] = []
    faulty = FaultyBackend(MemoryBackend(), parse(spec))
    return RetryingBackend(faulty, attempts=attempts, sleep=slept.append, rng=lambda: 1.0), faulty, slept


def test_transient_faults_are_retried_with_growing_delays() -> None:
    backend, faulty, slept = stack("put:transient:count=3")
    backend.put("chunks/aa/x", b"data")
    assert backend.get("chunks/aa/x") == b"data"
    assert slept == [0.25, 0.5, 1.0] and backend.retries == 3
    assert faulty.faults[0].fired == 3


def test_delays_are_jittered_and_capped() -> None:
    slept: list[float] = []
    backend = RetryingBackend(FaultyBackend(MemoryBackend(), parse("get:transient:count=*")),
                              attempts=9, max_delay=2.0, sleep=slept.append, rng=lambda: 0.5)
    with pytest.raises(TransientError):
        backend.get("k")
    assert slept == [0.125, 0.25, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_a_fault_that_stays_gives_up_with_the_count() -> None:
    backend, faulty, slept = stack("put:transient:count=*", attempts=4)
    with pytest.raises(TransientError, match=r"put chunks/aa/x .* dropped \(gave up after 4 attempts\)"):
        backend.put("chunks/aa/x", b"data")
    assert len(slept) == 3 and not faulty.inner.exists("chunks/aa/x")


def test_attempts_changed_after_opening_are_the_ones_tried() -> None:
    backend, _, slept = stack("put:transient:count=*", attempts=4)
    backend.attempts = 7  # as a test of a longer outage sets it on the store open_backend made
    with pytest.raises(TransientError, match=r"gave up after 7 attempts"):
        backend.put("chunks/aa/x", b"data")
    assert len(slept) == 6


def test_permanent_errors_and_missing_objects_are_not_retried() -> None:
    backend, _, slept = stack("put:permanent;get:missing")
    with pytest.raises(RepositoryError, match="refused"):
        backend.put("config", b"x")
    backend.put("config", b"x")  # the one fault is used up
    with pytest.raises(KeyError):
        backend.get("config")
    assert backend.get("config") == b"x" and slept == []


def test_nth_call_and_prefix_choose_the_victim() -> None:
    backend, faulty, _ = stack("put:permanent:prefix=chunks/:nth=3")
    for i in range(2):
        backend.put(f"chunks/{i}", b"ok")
    backend.put("indexes/1", b"other prefix, not counted")
    with pytest.raises(RepositoryError):
        backend.put("chunks/2", b"third")
    backend.put("chunks/3", b"fourth")
    assert sorted(o.key for o in faulty.inner.list("chunks/")) == ["chunks/0", "chunks/1", "chunks/3"]


def test_a_broken_listing_is_listed_again_whole() -> None:
    backend, _, slept = stack("list:transient")
    for key in ("a/1", "a/2"):
        backend.put(key, b"")
    assert sorted(o.key for o in backend.list("a/")) == ["a/1", "a/2"] and len(slept) == 1


def test_slow_calls() -> None:
    backend, _, _ = stack("exists:slow:seconds=0.2:count=*")
    started = time.monotonic()
    assert not backend.exists("x") and not backend.exists("y")
    assert time.monotonic() - started >= 0.4


def test_bad_fault_specs() -> None:
    with pytest.raises(ValueError, match="kind one of"):
        parse("put:explode")
    with pytest.raises(ValueError, match="unknown fault option 'every'"):
        parse("put:transient:every=2")
