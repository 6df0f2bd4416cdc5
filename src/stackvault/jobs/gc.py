"""The gc job: delete chunks (and leftovers of killed jobs) that no committed backup references.

It runs under the exclusive repository lock (and the catalog's exclusive lock on the repository), so
no backup can be about to reference a chunk it deletes. It refuses to run when any block index cannot
be read, or any backup record: deleting by an incomplete mark would destroy data that backups still
need. Chunks set aside as damaged (`<id>.bad`) are unreferenced and go with the rest.
"""

from __future__ import annotations

import logging
import time

from ..errors import RepositoryError, StackvaultError
from .context import JobContext

log = logging.getLogger(__name__)


def gc(ctx: JobContext, grace_s: float = 0.0, dry_run: bool = False) -> dict:
    repo = ctx.repo
    started = time.time()
    with ctx.recorded("gc") as report, ctx.locked("exclusive", "gc"):
        referenced: set[bytes] = set()
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
                referenced.update(index.chunk_ids())
        garbage = repo.find_garbage(referenced, live_indexes, cutoff=started - grace_s)
        if not dry_run:
            repo.delete_garbage(garbage)
        deleted, freed = garbage.chunks_deleted, garbage.chunk_bytes
        log.info("gc: %d unreferenced chunks (%d bytes) %s, %d chunks referenced", deleted, freed,
                 "to delete" if dry_run else "deleted", len(referenced))
        report.update(chunks_deleted=deleted, bytes_freed=freed, orphan_indexes_deleted=len(garbage.indexes),
                      temp_files_deleted=len(garbage.temp_files), chunks_kept=len(referenced), dry_run=dry_run)
        if repo.packed:
            report.update(packs_deleted=len(garbage.chunks) + len(garbage.repack), packs_repacked=len(garbage.repack),
                          bytes_repacked=garbage.repacked_bytes)
    return report
