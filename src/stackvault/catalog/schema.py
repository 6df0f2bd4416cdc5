"""Bringing a catalog's schema to the revision this stackvault knows, with alembic, on every open.

Three cases besides "already current": an empty database is created by running every migration; a
catalog made before migrations existed (the three tables, no version table) is *adopted* by stamping
the first revision, keeping its rows; a catalog whose revision this code does not know was migrated
by a newer stackvault and is refused, since writing to it could lose what the newer schema holds.

Several proxies may open one empty catalog at once, so the check and the upgrade run in one
transaction under a lock: SQLite's write lock (BEGIN IMMEDIATE) or a PostgreSQL transaction-level
advisory lock. SQLite and PostgreSQL both roll back DDL with the transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import UsageError
from .connect import is_postgresql, writer

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Our own name for alembic's version table, so a PostgreSQL database shared with another alembic
#: application keeps both histories apart.
VERSION_TABLE = "stackvault_schema_version"

#: The newest revision, written here so that opening a current catalog needs no alembic import (half
#: a second per command on a busy proxy); tests/catalog checks it against the migration scripts.
HEAD_REVISION = "0006_policies"

#: The revision a pre-migration catalog (made by `Base.metadata.create_all`) is identical to.
FIRST_REVISION = "0001_initial"
PRE_MIGRATION_TABLES = {"jobs", "backups", "disks"}

#: Key of the PostgreSQL advisory lock held while migrating (any constant unlikely to clash).
_MIGRATION_LOCK_KEY = 0x5374_6B76_0001  # "Stkv" 1


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(rev)s")  # rev_id "0002_what" -> versions/0002_what.py
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The head as the migration scripts say (HEAD_REVISION must equal it)."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"the catalog migrations have {len(heads)} heads: merge them"
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return _current(conn)


def upgrade(engine: Engine, url: str) -> str:
    """Bring the catalog at `url` to the head revision; return the revision it was at before ("" if none)."""
    with engine.connect() as conn:  # fast path: current catalogs take no lock and load no alembic
        before = _current(conn)
    if before == HEAD_REVISION:
        return before
    from alembic import command

    head = head_revision()
    with writer(engine).begin() as conn:
        if is_postgresql(engine):
            conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        before = _current(conn)  # again, under the lock: another proxy may have just migrated it
        _refuse_unknown(before, head, url)
        if before is None:
            existing = set(inspect(conn).get_table_names()) & PRE_MIGRATION_TABLES
            if existing == PRE_MIGRATION_TABLES:
                command.stamp(alembic_config(conn), FIRST_REVISION)
            elif existing:
                raise UsageError(
                    f"catalog {safe_url(url)} has the tables {', '.join(sorted(existing))} but not "
                    f"{', '.join(sorted(PRE_MIGRATION_TABLES - existing))} and no schema version",
                    "point --catalog at an empty database, or run `stackvault catalog rebuild` with a new one",
                )
        if before != head:
            command.upgrade(alembic_config(conn), "head")
    return before or ""


def _current(conn: Connection) -> str | None:
    """The catalog's revision, read as alembic writes it (one row in the version table), or None."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    revisions = list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())  # noqa: S608 - a constant
    if len(revisions) > 1:
        raise UsageError(f"catalog has {len(revisions)} schema revisions ({', '.join(revisions)}) at once",
                         "it was changed by hand or by a branch of stackvault: restore it or rebuild it")
    return revisions[0] if revisions else None


def _refuse_unknown(revision: str | None, head: str, url: str) -> None:
    if revision is None:
        return
    from alembic.script import ScriptDirectory

    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known:
        raise UsageError(
            f"catalog {safe_url(url)} has schema revision {revision}, newer than this stackvault knows ({head})",
            "upgrade stackvault on this proxy to the version the other proxies run",
        )


def safe_url(url: str) -> str:
    """The URL without its password, for messages (as given when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
