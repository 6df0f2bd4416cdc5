"""The catalog: a queryable summary of jobs and backups (SQLite by default, PostgreSQL at scale).

It holds no per-block data (that lives in the repository's block indexes) and nothing that cannot be
rebuilt from the repository, except the history of failed jobs and the policies written through the
API (catalog/policies.py).
"""

from .store import Catalog

__all__ = ["Catalog"]
