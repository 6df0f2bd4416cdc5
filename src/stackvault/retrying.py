"""One retry policy for every call to the cloud, the object store and the catalog (with tenacity).

A loaded Glance, Cinder or object store answers 500/503/429 or drops a connection often enough that a
job must try again; a second proxy may hold SQLite's write lock for a moment. What is transient is
decided once per kind of service below, how often and how long to wait once in `RetryPolicy`:
exponential backoff with full jitter (a random pause up to first_delay * 2**n, capped), so that the
upload workers of one or several proxies never retry in lockstep against a service already
overloaded. Each retry is one warning line naming the call and the short reason (an HTTP status, the
first line of an error: never a request body or a credential; `logs` redacts what slips through).

Waiting for a cloud object to reach a status is not retrying: that is openstacksdk's waiters' job
(`wait_for_status`, `wait_for_delete`, `wait_for_server`), used by `stackvault.cloud`.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

log = logging.getLogger("stackvault.retry")

T = TypeVar("T")
Transient = Callable[[BaseException], bool]


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries per call (the first one included), pausing up to first_delay_s * 2**n seconds,
    at most max_delay_s, between two; `deadline_s`, when set, also ends the tries once that much time
    has passed (for waits on a lock whose holder is expected to finish soon: then `attempts` may be
    None). `log_level` is the retries' lines' (INFO where a retry is expected, not a sign of trouble)."""

    attempts: int | None = 6
    first_delay_s: float = 0.25
    max_delay_s: float = 8.0
    deadline_s: float | None = None
    log_level: int = logging.WARNING

    def retrying(self, what: str, transient: Transient, *, describe: Callable[[BaseException], str] | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random,
                 on_retry: Callable[[], None] | None = None) -> tenacity.Retrying:
        """A tenacity `Retrying` that runs a call under this policy and re-raises its last error.

        `describe` says an error in the retry's log line (default: its first line); `sleep` and `rng`
        are there for tests; `on_retry` counts retries (the store wrapper's `retries`)."""
        if self.attempts is None and self.deadline_s is None:
            raise ValueError("a retry policy needs attempts or a deadline")
        exponential = tenacity.wait_exponential(multiplier=self.first_delay_s, max=self.max_delay_s)
        stop: tenacity.stop.stop_base = tenacity.stop_never
        if self.attempts is not None:
            stop = tenacity.stop_after_attempt(max(1, self.attempts))
        if self.deadline_s is not None:
            stop = stop | tenacity.stop_after_delay(self.deadline_s)
        of = f" of {max(1, self.attempts) - 1}" if self.attempts is not None else ""
        say = describe or first_line

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.upcoming_sleep
            log.log(self.log_level, "%s: %s; retry %d%s in %.2f s", what, say(exc) if exc else "failed",
                    state.attempt_number, of, delay)
            if on_retry is not None:
                on_retry()

        return tenacity.Retrying(
            stop=stop,
            wait=lambda state: rng() * exponential(state),
            retry=tenacity.retry_if_exception(transient),
            before_sleep=before_sleep, sleep=sleep, reraise=True)

    def call(self, what: str, fn: Callable[[], T], transient: Transient, **options) -> T:
        """`fn()` under this policy: its value, or its last error once the tries are used up."""
        return self.retrying(what, transient, **options)(fn)


#: Calls to the cloud's APIs and to object stores.
SERVICE = RetryPolicy()
#: Deleting what a job made in the cloud: fewer tries, as the job's report names what stays behind.
REMOVAL = RetryPolicy(attempts=4, first_delay_s=0.5)


def first_line(exc: BaseException) -> str:
    """An error's first line, short enough for a log line or a report."""
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]


# The predicates import their service's client library when first called: a command that never reaches
# the cloud or PostgreSQL (a local backup, `list`) does not pay for loading openstacksdk or psycopg.


def transient_cloud(exc: BaseException) -> bool:
    """A 5xx or 429 answer, or none at all (a refused or reset connection, a timed-out request)."""
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc

    if isinstance(exc, os_exc.HttpException):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, ks_exc.ConnectionError)


def cloud_reason(exc: BaseException) -> str:
    """`HTTP 503 (first line of the service's message)`, or the error's first line."""
    from openstack import exceptions as os_exc

    if isinstance(exc, os_exc.HttpException) and exc.status_code:
        details = (str(exc.details or "").strip().splitlines() or [""])[0][:200]
        return f"HTTP {exc.status_code}" + (f" ({details})" if details else "")
    return first_line(exc)


def transient_catalog(exc: BaseException) -> bool:
    """SQLite busy ("database is locked"), or PostgreSQL's serialization failures, deadlocks and lost
    connections (psycopg's OperationalError holds all three): each goes away when the statement runs
    again a moment later. SQLAlchemy's wrapper of a driver's error is judged by that error."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, sqlite3.OperationalError):
        return (getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_BUSY") or "locked" in str(exc)
    import psycopg

    return isinstance(exc, psycopg.OperationalError)
