"""Rebuilding what the repository can tell again: the working state and the catalog."""

from __future__ import annotations

import time

from ..catalog.leases import iso
from ..catalog.schema import safe_url
from ..errors import DamagedRecordError, StackvaultError
from .context import JobContext
from .quiesce_proof import apply_proofs

#: How long `list` and `show` keep mentioning a job that stopped without finishing.
INTERRUPTED_NOTICE_S = 7 * 86400


def rebuild_state(ctx: JobContext, disk_key: str | None = None) -> dict:
    repo = ctx.repo
    records, damaged = repo.scan()
    keys = sorted({d.disk_key for r in records for d in r.disks}) if disk_key is None else [disk_key]
    rebuilt = {key: ctx.state.rebuild(key) for key in keys}
    return {"disks": [{"disk_key": k, "backup_id": b} for k, b in rebuilt.items()], **_damaged(damaged)}


def rebuild_catalog(ctx: JobContext) -> dict:
    """The catalog from the repository alone: the explicit way to drop rows of missing backups too."""
    records, damaged = ctx.repo.scan()
    count = ctx.catalog.rebuild(ctx.repo.id, records)
    return {"backups": count, "catalog": safe_url(ctx.settings.catalog_url), "verified_quiesce": apply_proofs(ctx),
            **_damaged(damaged)}


def _damaged(damaged: dict) -> dict:
    """What a job that skipped damaged backup records says about them (nothing when there are none)."""
    if not damaged:
        return {}
    ids = sorted(damaged)
    return {"damaged": [{"backup_id": b, "problem": damaged[b].problem} for b in ids],
            "warning": f"{len(ids)} damaged backup records skipped ({', '.join(ids)}): run `stackvault verify`; "
                       "remove one with `stackvault forget ID`"}


def sync_catalog(ctx: JobContext) -> dict:
    """Add to the catalog the repository's committed backups it lacks; report what does not match.

    A job killed between committing a backup and recording it in the catalog, or a backup made by
    another proxy, leaves the catalog behind the repository: listing the ids is cheap, so `list`
    reconciles before it answers. Rows of backups the repository no longer holds go as `missing_rows`
    says. Returns `{"missing": [ids], "forgotten": [ids], "damaged": [{"backup_id", "problem"}],
    "ids": [the repository's ids]}`.
    """
    repo = ctx.repo
    # The catalog first: a backup another proxy commits and catalogs between the two reads is then
    # in both, never mistaken for a row the repository no longer has.
    in_catalog = {row.backup_id for row in ctx.catalog.backups(repo.id)}
    ids = repo.backup_ids()
    damaged = {}
    for backup_id in sorted(set(ids) - in_catalog):
        try:
            ctx.catalog.add_backup(repo.id, repo.get_backup(backup_id))
        except DamagedRecordError as exc:
            damaged[backup_id] = exc
    missing, forgotten = missing_rows(ctx, in_catalog, ids)
    return {"missing": missing, "forgotten": forgotten, "ids": ids,
            "damaged": [{"backup_id": b, "problem": e.problem} for b, e in sorted(damaged.items())]}


def missing_rows(ctx: JobContext, in_catalog: set[str], ids: list[str]) -> tuple[list[str], list[str]]:
    """The catalog's backups the repository does not hold: (missing, forgotten).

    Several proxies may keep separate catalogs, so a `prune` or `forget` on one leaves rows on the
    others. A backup with a tombstone (`forgotten/<id>`, written by `forget` and `prune` of any proxy)
    was removed on purpose: its row is dropped here. Any other is `missing`: the store is not
    trusted, so a deletion nobody asked for is reported (`list` warns, `verify` fails) until an
    operator forgets it (`stackvault forget ID`, or `catalog rebuild`).
    """
    missing, forgotten = [], []
    for backup_id in sorted(in_catalog - set(ids)):
        if ctx.repo.was_forgotten(backup_id):
            ctx.catalog.remove_backup(backup_id)
            forgotten.append(backup_id)
        else:
            missing.append(backup_id)
    return missing, forgotten


def missing_backups(ctx: JobContext, ids: list[str]) -> list[str]:
    """`missing_rows` for verify: empty when the catalog cannot be used (verify works from the
    repository alone)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        in_catalog = {row.backup_id for row in ctx.catalog.backups(ctx.repo.id)}
    except (StackvaultError, SQLAlchemyError):
        return []
    return missing_rows(ctx, in_catalog, ids)[0]


def interrupted_jobs(ctx: JobContext) -> list[dict]:
    """Jobs on this repository that stopped without finishing in the last week, marking any just found.

    A killed proxy cannot record its own end: `list` and `show` (and every new job) mark its
    `running` row `interrupted` once its lease has ended, and say so for a week.
    """
    ctx.catalog.reap_jobs(ctx.repo.id)
    rows = ctx.catalog.interrupted_jobs(ctx.repo.id, since=iso(time.time() - INTERRUPTED_NOTICE_S))
    return [{"job_id": r.id, "kind": r.kind, "host": r.host, "pid": r.pid, "started": r.started,
             "last_seen": r.heartbeat, "message": r.message} for r in rows]
