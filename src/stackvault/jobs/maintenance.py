"""Rebuilding what the repository can tell again: the working state and the catalog."""

from __future__ import annotations

from .context import JobContext
from .quiesce_proof import apply_proofs


def rebuild_state(ctx: JobContext, disk_key: str | None = None) -> dict:
    repo = ctx.repo
    keys = sorted({d.disk_key for r in repo.backups() for d in r.disks}) if disk_key is None else [disk_key]
    rebuilt = {key: ctx.state.rebuild(key) for key in keys}
    return {"disks": [{"disk_key": k, "backup_id": b} for k, b in rebuilt.items()]}


def rebuild_catalog(ctx: JobContext) -> dict:
    count = ctx.catalog.rebuild(ctx.repo.id, ctx.repo.backups())
    return {"backups": count, "catalog": ctx.settings.catalog_url, "verified_quiesce": apply_proofs(ctx)}
