"""Named locks between proxies that share one catalog, released by the database when a proxy dies.

On PostgreSQL a lock is a session-level advisory lock held on its own connection: if the proxy
process dies or its host vanishes, the server ends the session and the lock goes with it (the
"lease" is the connection; TCP keepalives bound how long a vanished host keeps it). On a SQLite
catalog, which only proxies on one host can share, the same call takes an `flock` on a file beside
the database, which the kernel releases when the process exits.

Shared locks go with shared work (backups of different servers), an exclusive lock with work that
must run alone (`prune`, `gc`); names are free text, e.g. `repo:<repository id>`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, func, select

from .connect import is_postgresql, sqlite_path
from .filelock import busy, file_lock, lock_key, retry

_memory_locks: dict[str, threading.Lock] = {}
_memory_guard = threading.Lock()


@contextmanager
def advisory_lock(engine: Engine, url: str, name: str, shared: bool = False,
                  wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock `name` for the `with` block; wait up to `wait_s` seconds, then raise LockedError."""
    if is_postgresql(engine):
        with _postgresql_lock(engine, name, shared, wait_s):
            yield
    elif (path := sqlite_path(url)) is not None:
        with file_lock(path, name, shared, wait_s):
            yield
    else:
        with _memory_lock(name, wait_s):  # an in-memory catalog is one process's: a thread lock is enough
            yield


@contextmanager
def _postgresql_lock(engine: Engine, name: str, shared: bool, wait_s: float) -> Iterator[None]:
    key = lock_key(name)
    take = func.pg_try_advisory_lock_shared if shared else func.pg_try_advisory_lock
    release = func.pg_advisory_unlock_shared if shared else func.pg_advisory_unlock
    # Autocommit: the lock belongs to the session, and no transaction stays open while it is held.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        retry(lambda: bool(conn.execute(select(take(key))).scalar()), name, wait_s)
        try:
            yield
        finally:
            conn.execute(select(release(key)))


@contextmanager
def _memory_lock(name: str, wait_s: float) -> Iterator[None]:
    with _memory_guard:
        lock = _memory_locks.setdefault(name, threading.Lock())
    acquired = lock.acquire(timeout=wait_s) if wait_s > 0 else lock.acquire(blocking=False)
    if not acquired:
        raise busy(name, wait_s)
    try:
        yield
    finally:
        lock.release()
