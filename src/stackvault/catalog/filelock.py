"""The SQLite catalog's named locks: `flock`s on files beside the database, without SQLAlchemy.

Kept apart from `locks.py` so that a job can take its catalog lock on the default SQLite catalog
without importing SQLAlchemy first (a third of a second on the path of every backup); the
SQLAlchemy import then overlaps the engine's work (see `JobContext.locked`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import LockedError

#: How often a waiting caller tries again.
POLL_S = 0.1

# The plain file URLs the fast path reads itself; anything else (URL escapes, other drivers) goes
# through SQLAlchemy's own parsing. tests/catalog/test_filelock.py holds the two to the same answer.
_PLAIN_SQLITE = re.compile(r"^sqlite(\+pysqlite)?:///(?P<path>[^?%]+)(\?[^%]*)?$")


def plain_sqlite_path(url: str) -> str | None:
    """The database file of a plain `sqlite:///PATH` URL (absolute), or None when unsure."""
    m = _PLAIN_SQLITE.match(url)
    if m is None or m["path"] == ":memory:":
        return None
    return os.path.abspath(m["path"])


def repository_lock_name(repo_id: str) -> str:
    """The catalog lock of one repository: shared by backups, exclusive for prune and gc."""
    return f"repo:{repo_id}"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (PostgreSQL advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def busy(name: str, wait_s: float) -> LockedError:
    return LockedError(f"catalog lock {name!r} is held by another proxy (waited {wait_s:g} s)",
                       "wait for that job to finish, or give it longer to wait")


def retry(try_once: Callable[[], bool], name: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not try_once():
        if time.monotonic() >= deadline:
            raise busy(name, wait_s)
        time.sleep(POLL_S)


@contextmanager
def file_lock(db_path: str, name: str, shared: bool, wait_s: float) -> Iterator[None]:
    """The lock `name` as an `flock` in `<db_path>.locks/`, which the kernel releases when the process exits."""
    folder = db_path + ".locks"
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, f"{lock_key(name) & (2**64 - 1):016x}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB

        def try_once() -> bool:
            try:
                fcntl.flock(fd, mode)
                return True
            except BlockingIOError:
                return False

        retry(try_once, name, wait_s)
        yield  # closing the descriptor releases the lock
    finally:
        os.close(fd)
