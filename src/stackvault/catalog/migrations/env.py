"""Alembic's entry point for the catalog's migrations.

Users never run alembic: `stackvault.catalog.schema.upgrade` hands in a connection that is already
inside a locked transaction (`config.attributes["connection"]`), so the check of the current revision
and the upgrade are one atomic step. A developer writing a new revision runs alembic's
`command.revision` with `sqlalchemy.url` set to a scratch catalog instead (see docs/catalog.md).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from stackvault.catalog.models import Base
from stackvault.catalog.schema import VERSION_TABLE


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite cannot ALTER most things: later revisions copy-and-move tables there
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url to a scratch catalog at the head revision (docs/catalog.md)")
    with create_engine(url).begin() as conn:
        _run(conn)
