"""Repository locks with leases, as objects in the repository itself (so they work on object stores).

Backups take *shared* locks; `prune` and `gc` take an *exclusive* one. Restores and verifies take
*read* locks: shared ones that they do without when the lock cannot be written (a full disk, a
read-only mount, credentials that can only read), with a warning, so that a restore still works on the
worst day; they still refuse to start while a live exclusive lock is seen. Every
lock carries an expiry that a background thread keeps pushing forward; a proxy that dies stops
refreshing and its lock expires, so nobody has to clean up after it. A lock of a dead process on this
same host is recognised at once. Acquiring writes the lock first and then looks for conflicts, so of
two jobs racing at least one sees the other.

A lock object that cannot be read as one (planted by the store, sealed under another key, written
by a broken proxy) must not stop every command, nor be obeyed for ever: it is a lock of unknown
owner, held as exclusive while the object is younger than a lease (its time in the listing), stale
after that and removed where stale locks are removed; a warning names it.
"""

from __future__ import annotations

import json
import math
import os
import random
import reprlib
import secrets
import threading
import time
from dataclasses import dataclass

from ..errors import LockedError, StackvaultError, warn
from ..storage.base import SMALL_OBJECT_BYTES
from . import pids
from .crypto import ObjectAuthError
from .layout import LOCKS, lock_key
from .repository import Repository, hostname

LEASE_S = 120.0
REFRESH_S = 30.0


@dataclass
class LockInfo:
    key: str
    kind: str
    host: str
    pid: int
    job: str
    expires: float
    #: Why the object is no lock this proxy can read, else None.
    unreadable: str | None = None

    def alive(self, now: float) -> bool:
        if self.expires < now:
            return False
        return self.unreadable is not None or self.host != hostname() or pids.alive(self.pid)


def _decode(key: str, doc: object) -> LockInfo:
    """The lock a document describes; ValueError when it is not one (any type, any value)."""
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
    kind, host, pid, job, expires = (doc.get(k) for k in ("kind", "host", "pid", "job", "expires"))
    if kind not in ("shared", "exclusive") or not isinstance(host, str) or not isinstance(job, (str, type(None))):
        raise ValueError("no kind, host or job")
    if type(pid) is not int or not 0 < pid < 1 << 31:  # a pid_t; pids.alive tells which can be running
        raise ValueError(f"pid {reprlib.repr(pid)} is no process id")
    if type(expires) not in (int, float) or not math.isfinite(expires):  # type: ignore[arg-type]  # int or float
        raise ValueError(f"expiry {reprlib.repr(expires)} is no time")
    return LockInfo(key, kind, host, pid, job or "", float(expires))  # type: ignore[arg-type]  # int or float


def read_locks(repo: Repository) -> list[LockInfo]:
    locks = []
    for obj in repo.backend.list(LOCKS):
        try:
            doc = json.loads(repo.backend.get(obj.key, SMALL_OBJECT_BYTES))
            locks.append(_decode(obj.key, doc))
        except KeyError:
            continue  # removed meanwhile
        except (ValueError, RecursionError, ObjectAuthError) as exc:
            why = exc.problem if isinstance(exc, ObjectAuthError) else str(exc) or type(exc).__name__
            locks.append(LockInfo(obj.key, "exclusive", "", 0, f"an unreadable lock object {obj.key}",
                                  obj.mtime + LEASE_S, unreadable=why))
    return locks


class RepositoryLock:
    def __init__(self, repo: Repository, kind: str, job: str, *, wait_s: float = 0.0) -> None:
        assert kind in ("read", "shared", "exclusive")
        self.repo = repo
        self.optional = kind == "read"  # other proxies see a read lock as the shared lock it is
        self.kind = "shared" if self.optional else kind
        #: Why the job runs without a lock (a read lock that could not be written), else None.
        self.warning: str | None = None
        self.job = job
        self.wait_s = wait_s
        self.key = lock_key(f"{int(time.time())}-{secrets.token_hex(4)}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()  # unreadable lock objects already named (once each, not per retry)

    def _write(self) -> None:
        doc = {"kind": self.kind, "host": hostname(), "pid": os.getpid(), "job": self.job,
               "expires": time.time() + LEASE_S}
        self.repo.backend.put(self.key, json.dumps(doc).encode())

    def _conflicts(self) -> list[LockInfo]:
        now = time.time()
        out = []
        for lock in read_locks(self.repo):
            if lock.key == self.key:
                continue
            if lock.unreadable is not None and lock.key not in self._warned:
                self._warned.add(lock.key)
                warn(f"lock object {lock.key} is not a lock this proxy can read ({lock.unreadable}): it is "
                     f"taken as an exclusive lock of unknown owner until {int(LEASE_S)} s after it was "
                     "written, then as stale")
            if not lock.alive(now):
                if self.kind == "exclusive":
                    self.repo.backend.delete(lock.key)
                continue
            if self.kind == "exclusive" or lock.kind == "exclusive":
                out.append(lock)
        return out

    def _try_write(self) -> bool:
        """Write the lock; False when a read lock cannot be written (every other failure is raised)."""
        try:
            self._write()
            return True
        except (StackvaultError, OSError) as exc:
            if not self.optional:
                raise
            reason = exc.message if isinstance(exc, StackvaultError) else str(exc)
            self.warning = (f"no lock taken ({reason}): a concurrent prune or gc could remove what this "
                            f"{self.job.split()[0]} reads")
            return False

    def acquire(self) -> RepositoryLock:
        deadline = time.monotonic() + self.wait_s
        while True:
            self.warning = None
            written = self._try_write()
            try:
                conflicts = self._conflicts()
            except StackvaultError as exc:
                if not self.optional:
                    raise
                # A read job that cannot even list the locks (a file where `locks/` belongs, a store
                # that refuses listings) goes on as one that cannot write its own: said, not hidden.
                self.warning = (f"no lock taken (the repository's locks cannot be read: {exc.message}): a "
                                f"concurrent prune or gc could remove what this {self.job.split()[0]} reads")
                break
            if not conflicts:
                break
            if written:
                self.repo.backend.delete(self.key)
            if time.monotonic() >= deadline:
                other = conflicts[0]
                owner = ("unknown owner" if other.unreadable is not None
                         else f"pid {other.pid} on {other.host}, {other.kind}")
                raise LockedError(
                    f"repository is locked by {other.job} ({owner})",
                    "wait for it to finish or pass --wait, e.g. --wait 10m; a dead proxy's lock expires "
                    f"within {int(LEASE_S)} s")
            time.sleep(min(1.0 + random.random(), max(0.0, deadline - time.monotonic())))
        if not written:
            return self  # the job reports why with its result
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - a failed refresh is retried; the lease covers several intervals
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is None:
            return  # never taken: a read lock that could not be written
        self._thread.join()
        self.repo.backend.delete(self.key)

    def __enter__(self) -> RepositoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
