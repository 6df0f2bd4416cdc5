"""One proxy's share of the concurrency test: many jobs and backups written to a shared catalog.

Run as a separate process (`python -m catalog.catalog_writer URL REPO PREFIX COUNT`, with tests/ and src/
on PYTHONPATH) so that two of them
contend for real: separate connections, separate SQLite file locks, no shared Python state.
"""

from __future__ import annotations

import sys

from catalog.records import record
from stackvault.catalog import Catalog


def main(url: str, repo_id: str, prefix: str, count: int) -> None:
    catalog = Catalog(url)
    for i in range(count):
        job = catalog.start_job("backup", repo_id)
        catalog.add_backup(repo_id, record(f"{prefix}-{i:04d}", f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
                                           disks=2))
        catalog.finish_job(job, "success", backup_id=f"{prefix}-{i:04d}", report={"i": i})
        catalog.backups(repo_id)  # readers interleave with the other process's writes


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
