"""The catalog: a queryable summary of jobs and backups (SQLite by default, PostgreSQL at scale).

It holds no per-block data (that lives in the repository's block indexes) and nothing that cannot be
rebuilt from the repository, except the history of failed jobs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Catalog

__all__ = ["Catalog"]


def __getattr__(name: str) -> object:
    # `Catalog` is imported on first use: SQLAlchemy costs a third of a second that a job taking only
    # the SQLite catalog's file lock (catalog.filelock) should not pay before its work starts.
    if name == "Catalog":
        from .store import Catalog

        return Catalog
    raise AttributeError(name)
