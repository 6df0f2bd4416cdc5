"""Imported by uWSGI (`--import`) into Keystone and Glance: SQLite transactions begin IMMEDIATE.

oslo.db opens every SQLite transaction with a deferred `BEGIN`. Glance's image updates read the
row, then write it; two such transactions in two threads both hold SQLite's shared lock, and the
one that asks for the write lock second gets "database is locked" at once (SQLite refuses what
would deadlock; no busy timeout helps), which Glance answers with a 500, e.g. to a DELETE. Real
clouds run these services on MySQL or PostgreSQL, where this does not happen. Taking the write
lock at BEGIN turns the deadlock into a short wait behind the busy timeout, as a server database
would queue the row lock.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "before_cursor_execute", retval=True)
def _begin_immediate(conn, cursor, statement, parameters, context, executemany):
    if conn.dialect.name == "sqlite" and statement.strip().upper() == "BEGIN":
        statement = "BEGIN IMMEDIATE"
    return statement, parameters
