"""Catalog fixtures: one throwaway PostgreSQL server per session, one fresh database per test.

Every catalog test runs on SQLite and on PostgreSQL (`catalog_url` is parametrized); the PostgreSQL
half skips, saying why, where Debian's `postgresql` or psycopg is not installed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pgserver import PostgresServer, find_bindir

BACKENDS = ["sqlite", "postgresql"]
_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on loopback for the whole session, stopped at the end even after failures."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): install Debian "
                    "`postgresql` (deps/apt-postgres.txt, scripts/bootstrap)")
    try:
        import psycopg  # noqa: F401 - only whether it imports
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'psycopg[binary]'")
    if os.geteuid() == 0 and not _has_postgres_user():
        pytest.skip("running as root and there is no `postgres` user to run the server as")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _has_postgres_user() -> bool:
    import pwd

    try:
        pwd.getpwnam("postgres")
        return True
    except KeyError:
        return False


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def catalog_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an empty catalog database on this test's backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"t{next(_names)}_{os.getpid()}")
