"""Leases on the catalog's `running` job rows, so that a killed proxy's job does not stay running forever.

A job row records the host and pid running it and a lease expiry that a background thread pushes
forward while the job runs, as the repository's lock objects do (`stackvault.engine.locks`, whose rule
for "alive" this reuses: the lease has not ended, and on this host the pid still exists). Whoever
opens the catalog next (`list`, `show`, a new job) and finds a `running` row that is not alive marks it
`interrupted`, saying where it ran and when it was last seen.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..config import seconds
from ..engine.locks import LEASE_S, LockInfo
from ..engine.repository import hostname
from .models import JobRow, PolicyItemRow, PolicyRunRow

#: What holds a lease: a running job, a claimed policy item, a policy run being finished.
Leased = JobRow | PolicyItemRow | PolicyRunRow

#: Shortens the lease (seconds) for tests; refreshes come four times per lease.
LEASE_ENV = "STACKVAULT_JOB_LEASE_S"


def lease_s() -> float:
    """The lease, from LEASE_ENV when set: a positive finite number of seconds, or the one-line error."""
    text = os.environ.get(LEASE_ENV)
    return seconds(text, LEASE_ENV, positive=True) if text else LEASE_S


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def stamp(row: Leased, now: float) -> None:
    """Mark `row` as held by this process until one lease from `now`."""
    row.host, row.pid = hostname(), os.getpid()
    row.heartbeat, row.lease_expires = iso(now), now + lease_s()


def stopped(row: Leased, now: float) -> bool:
    """A running row whose holder is gone; rows made before leases existed have no lease and never are."""
    if row.lease_expires is None or row.host is None or row.pid is None:
        return False
    return not LockInfo("", row.kind, row.host, row.pid, str(row.id), row.lease_expires).alive(now)


def interruption(row: JobRow) -> str:
    return f"job {row.id} ({row.kind}) on host {row.host} (pid {row.pid}) stopped without finishing at {row.heartbeat}"


class Heartbeat:
    """One daemon thread per catalog, renewing the lease of every job this process is running."""

    def __init__(self, renew: Callable[[set[str], float], None]) -> None:
        self._renew = renew
        self._jobs: set[str] = set()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job_id: str) -> None:
        with self._guard:
            self._jobs.add(job_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sv-job-lease", daemon=True)
                self._thread.start()

    def jobs(self) -> set[str]:
        """The jobs this process is running (their rows are not another proxy's)."""
        with self._guard:
            return set(self._jobs)

    def discard(self, job_id: str) -> None:
        with self._guard:
            self._jobs.discard(job_id)

    def _run(self) -> None:
        while True:
            time.sleep(lease_s() / 4)
            jobs = self.jobs()
            if jobs:
                try:
                    self._renew(jobs, time.time())
                except Exception:  # noqa: BLE001 - a failed renewal is retried; the lease covers several
                    continue
