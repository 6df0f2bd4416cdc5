"""The gc job: delete chunks (and leftovers of killed jobs) that no committed backup references.

It runs under the exclusive repository lock (and the catalog's exclusive lock on the repository), so
no backup can be about to reference a chunk it deletes. It refuses to run when any block index cannot
be read, or any backup record: deleting by an incomplete mark would destroy data that backups still
need. Chunks set aside as damaged (`<id>.bad`) are unreferenced and go with the rest.
"""

from __future__ import annotations

import logging
import os
import time

from ..engine.chunks import chunk_key
from ..errors import RepositoryError, StackvaultError
from .context import JobContext

log = logging.getLogger(__name__)


def gc(ctx: JobContext, grace_s: float = 0.0, dry_run: bool = False) -> dict:
    repo = ctx.repo
    started = time.time()
    with ctx.recorded("gc") as report, ctx.locked("exclusive", "gc"):
        referenced: set[str] = set()
        live_indexes: set[str] = set()
        records, damaged = repo.scan()
        if damaged:  # the chunks a damaged record needs cannot be known: deleting any could lose them
            names = ", ".join(sorted(damaged))
            raise RepositoryError(f"gc stopped before deleting anything: {len(damaged)} backup records are damaged "
                                  f"({names}), so the chunks they need are unknown",
                                  "run `stackvault verify`, then remove each with `stackvault forget ID`")
        for record in records:
            for disk in record.disks:
                try:
                    index = repo.get_index(disk)
                except StackvaultError as exc:
                    raise RepositoryError(
                        f"gc stopped before deleting anything: {exc.message}",
                        f"run `stackvault verify`, then `stackvault forget {record.backup_id}`") from None
                live_indexes.add(disk.index)
                referenced.update(chunk_key(d) for d in index.chunk_ids())
        cutoff = started - grace_s
        deleted = freed = 0
        for obj in list(repo.backend.list("chunks/")):
            if obj.key not in referenced and obj.mtime <= cutoff:
                deleted += 1
                freed += obj.size
                if not dry_run:
                    repo.backend.delete(obj.key)
        orphans = [o.key for o in repo.backend.list("indexes/") if o.key not in live_indexes]
        # Leftovers of interrupted writes exist only where writes go through temporary files (local).
        temps = list(repo.backend.temp_files()) if hasattr(repo.backend, "temp_files") else []
        if not dry_run:
            for key in orphans:
                repo.backend.delete(key)
            # A file system keeps the folder of a pruned or killed backup's indexes: one per backup.
            if hasattr(repo.backend, "remove_empty_dirs"):
                repo.backend.remove_empty_dirs("indexes/")
            for path in temps:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        log.info("gc: %d unreferenced chunks (%d bytes) %s, %d chunks referenced", deleted, freed,
                 "to delete" if dry_run else "deleted", len(referenced))
        report.update(chunks_deleted=deleted, bytes_freed=freed, orphan_indexes_deleted=len(orphans),
                      temp_files_deleted=len(temps), chunks_kept=len(referenced), dry_run=dry_run)
    return report
