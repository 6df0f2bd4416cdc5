"""Engines for the catalog's two databases, set up so several proxies can write at once.

SQLite: WAL (readers never wait for a writer), a busy timeout (a writer waits for another instead of
failing), and transactions we begin ourselves. pysqlite's own BEGIN is DEFERRED, so a session that
reads and then writes can fail at once with "database is locked" when another process wrote in
between; write sessions therefore begin IMMEDIATE (take the write lock first, waiting up to the busy
timeout). PostgreSQL needs nothing special: ordinary transactions at READ COMMITTED.

A SQLite file that is not a database, or whose pages are damaged, raises CatalogError on any use
(one line naming the file and `stackvault catalog rebuild`), wherever in the job the damage shows;
`catalog rebuild` sets such a file aside (`set_aside`) and builds a new one from the repository.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url

from ..engine.fileio import make_private
from ..errors import CatalogError
from ..retrying import RetryPolicy, transient_catalog

#: How long a SQLite writer waits for another proxy's transaction before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0

#: How a connection tries again to switch a locked new catalog to WAL: often at first, for the busy timeout.
_WAL_RETRIES = RetryPolicy(attempts=None, first_delay_s=0.05, max_delay_s=1.0, deadline_s=SQLITE_BUSY_TIMEOUT_S,
                           log_level=logging.INFO)

#: Execution option read by the SQLite "begin" hook: DEFERRED for reads, IMMEDIATE for writes.
BEGIN_MODE = "stackvault_sqlite_begin"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(parsed.database)


#: SQLite's result codes for a file that is not a database or whose pages do not hold together.
DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def is_damage(exc: BaseException) -> bool:
    """Does this DB-API error say the SQLite file itself is damaged (not busy, not missing)?"""
    return isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorname", "").startswith(DAMAGE_CODES)


def damaged(path: str, problem: str) -> CatalogError:
    return CatalogError(f"catalog {path} is damaged: {problem}",
                        "run `stackvault catalog rebuild`: it keeps the damaged file beside the new one, which it "
                        "builds from the repository; restore, verify, list and show work without it")


def unopenable(url: str, problem: str) -> CatalogError:
    from .schema import safe_url

    return CatalogError(f"cannot open catalog {safe_url(url)}: {problem}",
                        "check --catalog / STACKVAULT_CATALOG, or --workdir, whose catalog.db is the default")


def damage(path: str) -> str | None:
    """What SQLite's own check says is wrong with the catalog file at `path`, or None if nothing is.

    Used by `catalog rebuild` before it opens the file: a file damaged in pages that opening does not
    read would otherwise fail halfway through the rebuild.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return None  # cannot be opened at all (a directory, no permission): not damage; opening says why
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(1)")]
        return None if rows == ["ok"] else str(rows[0])
    except sqlite3.DatabaseError as exc:
        return str(exc) if is_damage(exc) else None
    finally:
        conn.close()


def set_aside(path: str) -> str:
    """Rename a damaged catalog file (and its WAL and shared-memory files) to `<path>.damaged-<UTC time>`;
    returns the new name. It is kept: the history of failed jobs lives only there."""
    kept = base = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    n = 1
    while os.path.lexists(kept):  # an earlier one set aside within the same second is kept too
        n += 1
        kept = f"{base}-{n}"
    for suffix in ("-wal", "-shm", ""):  # the database last: a crash in between leaves it where it was
        if os.path.lexists(path + suffix):
            os.replace(path + suffix, kept + suffix)
    return kept


def open_engine(url: str) -> Engine:
    """An engine for the catalog URL; for a SQLite file, its folder is created first."""
    path = sqlite_path(url)
    if path is not None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file where a folder of the path should be
            raise unopenable(url, f"a part of {os.path.dirname(path)} is a file, not a directory") from None
        except OSError as exc:
            raise unopenable(url, f"{exc.strerror}: {exc.filename}") from None
        _private(url, path)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _tune_sqlite(engine, wal=path is not None)
        if path is not None:
            _report_damage(engine, path)
        return engine
    # No cap on connections beyond the pool's 5: each running backup holds one for the catalog's
    # lock on the repository ([cloud] parallel of them at once), and a capped pool would make the
    # next one wait for a connection instead of the lock.
    return create_engine(url, pool_pre_ping=True, max_overflow=-1)


def writer(engine: Engine) -> Engine:
    """The same engine, whose transactions take SQLite's write lock when they begin."""
    return engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"}) if is_sqlite(engine) else engine


def _private(url: str, path: str) -> None:
    """Create a new SQLite catalog file readable by the proxy's user alone, before SQLite does.

    SQLite gives its `-wal` and `-shm` files the database file's permissions, so the three stay
    private: the catalog names every server, volume and backup of every project.
    """
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        for existing in (path, f"{path}-wal", f"{path}-shm"):  # made open by an older version
            make_private(existing)
    except OSError as exc:
        raise unopenable(url, f"{exc.strerror}: {path}") from None


def _report_damage(engine: Engine, path: str) -> None:
    """Turn SQLite's "file is not a database" / "disk image is malformed", wherever a query meets them,
    into CatalogError: one line naming the file and the fix, instead of a traceback mid-job."""
    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if is_damage(context.original_exception):
            raise damaged(path, str(context.original_exception)) from None


def _switch_to_wal(cur: sqlite3.Cursor) -> None:
    """Put the database in WAL mode, waiting up to the busy timeout for another connection's lock.

    SQLite answers a change of journal mode that meets another connection's lock with "database is
    locked" at once, without calling its busy handler. Two proxies whose first jobs open a new
    catalog together meet exactly that: one is creating the tables while the other switches the
    still-empty file to WAL. The wait is the one a writer would get; on a file already in WAL mode
    the statement changes nothing and returns at once.
    """
    _WAL_RETRIES.call("switch the catalog to WAL", lambda: cur.execute("PRAGMA journal_mode = WAL"),
                      transient_catalog)


def _tune_sqlite(engine: Engine, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # DB-API objects
        dbapi_conn.isolation_level = None  # no implicit BEGIN: the "begin" hook below emits it
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if wal:
            _switch_to_wal(cur)
            cur.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # a sqlalchemy Connection
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(BEGIN_MODE, 'DEFERRED')}")
