"""The SQLite catalog's file lock is found without SQLAlchemy, at the very file SQLAlchemy names.

A job takes its catalog lock on the default SQLite catalog before SQLAlchemy is imported (so the
import overlaps its work); if the two parsers disagreed, two proxies would lock different files.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from stackvault.catalog.connect import sqlite_path
from stackvault.catalog.filelock import plain_sqlite_path

URLS = ["sqlite:////var/lib/stackvault/catalog.db", "sqlite:///relative/catalog.db", "sqlite+pysqlite:////a/b.db",
        "sqlite:////a/b.db?timeout=30", "sqlite:///./x.db"]


@pytest.mark.parametrize("url", URLS)
def test_plain_urls_name_the_same_file_as_sqlalchemy(url: str) -> None:
    assert plain_sqlite_path(url) == sqlite_path(url)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:////a/b%20c.db",
                                 "postgresql+psycopg://u:p@h/db"])
def test_anything_else_is_left_to_sqlalchemy(url: str) -> None:
    assert plain_sqlite_path(url) is None


def test_taking_the_lock_does_not_import_sqlalchemy(tmp_path) -> None:  # noqa: ANN001
    code = ("import sys; from stackvault.catalog.filelock import file_lock\n"
            f"with file_lock({str(tmp_path / 'c.db')!r}, 'repo:x', True, 0): pass\n"
            "print('sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
