"""The PostgreSQL catalog's password stays out of the command line: libpq finds it in PGPASSFILE.

docs/catalog.md tells operators to write `--catalog postgresql+psycopg://USER@HOST/DB` (no password,
which every local user could read in `ps`) and to keep the password in `~/.pgpass` or the file
`PGPASSFILE` names, with mode 0600. This checks that psycopg's libpq really does that, against a
server that asks for a password (scram-sha-256), through the real CLI.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.helpers import Stackvault

from .pgserver import PostgresServer

ROLE, PASSWORD = "sv_password_user", "pgpass-S3cret"


@dataclass
class PasswordCatalogUser(Stackvault):
    """A user whose catalog URL has no password, and whose environment names a password file (or none)."""

    url: str = ""
    passfile: Path | None = None

    @property
    def catalog_url(self) -> str:
        return self.url

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if not k.startswith("PG")}
        if self.passfile is not None:
            env["PGPASSFILE"] = str(self.passfile)
        return env


@pytest.fixture
def password_database(postgres: PostgresServer) -> str:
    """A database owned by a role that must give a password over TCP; returns its URL without the password."""
    import psycopg

    url = postgres.create_database(f"pw_{os.getpid()}")
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="stackvault", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ROLE}")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f'ALTER DATABASE "{name}" OWNER TO {ROLE}')
    hba = postgres.data / "pg_hba.conf"
    rule = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
    if rule not in hba.read_text():
        hba.write_text(rule + hba.read_text())  # first match wins: only this role needs a password
    subprocess.run(postgres._as_owner(str(postgres.bindir / "pg_ctl"), "-D", str(postgres.data), "reload"),
                   check=True, capture_output=True, timeout=60)
    return f"postgresql+psycopg://{ROLE}@127.0.0.1:{postgres.port}/{name}"


def test_the_password_comes_from_pgpassfile_not_the_command_line(password_database: str, tmp_path: Path) -> None:
    port, name = password_database.rsplit(":", 1)[1].split("/")
    sv = PasswordCatalogUser(tmp_path / "sv", url=password_database)
    sv.init("64KiB")

    res = sv.run("catalog", "rebuild", expect=None)  # no password anywhere: the server refuses, in one line
    assert res.rc == 2 and len(res.error_lines()) == 1 and "Traceback" not in res.stderr, res.describe()
    assert "password" in res.error_lines()[0], res.describe()

    sv.passfile = tmp_path / "pgpass"
    sv.passfile.write_text(f"127.0.0.1:{port}:{name}:{ROLE}:{PASSWORD}\n")
    sv.passfile.chmod(0o600)
    assert sv.run("catalog", "rebuild").data["backups"] == 0
    assert "warning" not in sv.run("list").data, "list must have read the catalog itself"
    assert all(PASSWORD not in arg for arg in sv.argv(["list"]))

    sv.passfile.chmod(0o644)  # libpq ignores a password file others can read, as docs/catalog.md says
    res = sv.run("catalog", "rebuild", expect=None)
    assert res.rc == 2 and len(res.error_lines()) == 1, res.describe()
