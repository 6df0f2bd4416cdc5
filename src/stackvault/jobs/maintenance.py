"""Rebuilding what the repository can tell again: the working state and the catalog."""

from __future__ import annotations

import time

from ..catalog.leases import iso
from ..catalog.schema import safe_url
from .context import JobContext
from .quiesce_proof import apply_proofs

#: How long `list` and `show` keep mentioning a job that stopped without finishing.
INTERRUPTED_NOTICE_S = 7 * 86400


def rebuild_state(ctx: JobContext, disk_key: str | None = None) -> dict:
    repo = ctx.repo
    keys = sorted({d.disk_key for r in repo.backups() for d in r.disks}) if disk_key is None else [disk_key]
    rebuilt = {key: ctx.state.rebuild(key) for key in keys}
    return {"disks": [{"disk_key": k, "backup_id": b} for k, b in rebuilt.items()]}


def rebuild_catalog(ctx: JobContext) -> dict:
    count = ctx.catalog.rebuild(ctx.repo.id, ctx.repo.backups())
    return {"backups": count, "catalog": safe_url(ctx.settings.catalog_url), "verified_quiesce": apply_proofs(ctx)}


def sync_catalog(ctx: JobContext) -> int:
    """Make the catalog list exactly the repository's committed backups; returns how many rows changed.

    A job killed between committing a backup and recording it in the catalog, or a backup forgotten
    by another proxy, leaves the catalog behind the repository: listing the ids is cheap, so `list`
    reconciles before it answers.
    """
    repo = ctx.repo
    # The catalog first: a backup another proxy commits and catalogs between the two reads is then
    # in both, never mistaken for a row the repository no longer has.
    in_catalog = {row.backup_id for row in ctx.catalog.backups(repo.id)}
    in_repo = set(repo.backup_ids())
    for backup_id in sorted(in_repo - in_catalog):
        ctx.catalog.add_backup(repo.id, repo.get_backup(backup_id))
    for backup_id in in_catalog - in_repo:
        ctx.catalog.remove_backup(backup_id)
    return len(in_repo ^ in_catalog)


def interrupted_jobs(ctx: JobContext) -> list[dict]:
    """Jobs on this repository that stopped without finishing in the last week, marking any just found.

    A killed proxy cannot record its own end: `list` and `show` (and every new job) mark its
    `running` row `interrupted` once its lease has ended, and say so for a week.
    """
    ctx.catalog.reap_jobs(ctx.repo.id)
    rows = ctx.catalog.interrupted_jobs(ctx.repo.id, since=iso(time.time() - INTERRUPTED_NOTICE_S))
    return [{"job_id": r.id, "kind": r.kind, "host": r.host, "pid": r.pid, "started": r.started,
             "last_seen": r.heartbeat, "message": r.message} for r in rows]
