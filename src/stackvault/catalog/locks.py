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

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, func, select

from ..errors import CatalogError, LockedError
from .connect import is_postgresql, sqlite_path

#: How often a waiting caller tries again.
_POLL_S = 0.1

_memory_locks: dict[str, threading.Lock] = {}
_memory_guard = threading.Lock()


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (PostgreSQL advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def advisory_lock(engine: Engine, url: str, name: str, shared: bool = False,
                  wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock `name` for the `with` block; wait up to `wait_s` seconds, then raise LockedError."""
    if is_postgresql(engine):
        with _postgresql_lock(engine, name, shared, wait_s):
            yield
    elif (path := sqlite_path(url)) is not None:
        with _file_lock(path, name, shared, wait_s):
            yield
    else:
        with _memory_lock(name, wait_s):  # an in-memory catalog is one process's: a thread lock is enough
            yield


def _busy(name: str, wait_s: float) -> LockedError:
    return LockedError(f"catalog lock {name!r} is held by another proxy (waited {wait_s:g} s)",
                       "wait for that job to finish, or give it longer to wait")


def _retry(try_once, name: str, wait_s: float) -> None:  # a () -> bool
    deadline = time.monotonic() + wait_s
    while not try_once():
        if time.monotonic() >= deadline:
            raise _busy(name, wait_s)
        time.sleep(_POLL_S)


@contextmanager
def _postgresql_lock(engine: Engine, name: str, shared: bool, wait_s: float) -> Iterator[None]:
    key = lock_key(name)
    take = func.pg_try_advisory_lock_shared if shared else func.pg_try_advisory_lock
    release = func.pg_advisory_unlock_shared if shared else func.pg_advisory_unlock
    # Autocommit: the lock belongs to the session, and no transaction stays open while it is held.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        _retry(lambda: bool(conn.execute(select(take(key))).scalar()), name, wait_s)
        try:
            yield
        finally:
            conn.execute(select(release(key)))


@contextmanager
def _file_lock(db_path: str, name: str, shared: bool, wait_s: float) -> Iterator[None]:
    """An flock on a file in `<catalog>.locks/`, a folder and files only the proxy's user can open: flock
    needs no write access, so a lock file other users could open would let any of them lock backups out."""
    folder = db_path + ".locks"
    path = os.path.join(folder, f"{lock_key(name) & (2**64 - 1):016x}.lock")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise CatalogError(f"cannot open the catalog's lock file {path}: {exc.strerror}",
                           f"{folder} must be a directory the proxy's user can write") from None
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():  # made by an earlier version
            os.fchmod(fd, 0o600)
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB

        def try_once() -> bool:
            try:
                fcntl.flock(fd, mode)
                return True
            except BlockingIOError:
                return False

        _retry(try_once, name, wait_s)
        yield  # closing the descriptor releases the lock
    finally:
        os.close(fd)


@contextmanager
def _memory_lock(name: str, wait_s: float) -> Iterator[None]:
    with _memory_guard:
        lock = _memory_locks.setdefault(name, threading.Lock())
    acquired = lock.acquire(timeout=wait_s) if wait_s > 0 else lock.acquire(blocking=False)
    if not acquired:
        raise _busy(name, wait_s)
    try:
        yield
    finally:
        lock.release()
