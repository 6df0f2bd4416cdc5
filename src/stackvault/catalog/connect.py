"""Engines for the catalog's two databases, set up so several proxies can write at once.

SQLite: WAL (readers never wait for a writer), a busy timeout (a writer waits for another instead of
failing), and transactions we begin ourselves. pysqlite's own BEGIN is DEFERRED, so a session that
reads and then writes can fail at once with "database is locked" when another process wrote in
between; write sessions therefore begin IMMEDIATE (take the write lock first, waiting up to the busy
timeout). PostgreSQL needs nothing special: ordinary transactions at READ COMMITTED.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

#: How long a SQLite writer waits for another proxy's transaction before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0

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


def open_engine(url: str) -> Engine:
    """An engine for the catalog URL; for a SQLite file, its folder is created first."""
    path = sqlite_path(url)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _tune_sqlite(engine, wal=path is not None)
        return engine
    # No cap on connections beyond the pool's 5: each running backup holds one for the catalog's
    # lock on the repository ([cloud] parallel of them at once), and a capped pool would make the
    # next one wait for a connection instead of the lock.
    return create_engine(url, pool_pre_ping=True, max_overflow=-1)


def writer(engine: Engine) -> Engine:
    """The same engine, whose transactions take SQLite's write lock when they begin."""
    return engine.execution_options(**{BEGIN_MODE: "IMMEDIATE"}) if is_sqlite(engine) else engine


def _tune_sqlite(engine: Engine, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
        dbapi_conn.isolation_level = None  # no implicit BEGIN: the "begin" hook below emits it
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if wal:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001 - a sqlalchemy Connection
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(BEGIN_MODE, 'DEFERRED')}")
