"""The prune job: forget backups the retention policy does not keep, per backed-up disk set.

Buckets work as restic's `forget`: keep-last N keeps the N newest; keep-daily N keeps the newest
backup of each of the N most recent days that have backups; likewise hourly, weekly (ISO weeks),
monthly and yearly; keep-within keeps every backup made within that long of the newest one. A backup
kept by any rule is kept. Chunks are freed afterwards by `gc`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from ..config import Retention
from ..engine.manifest import BackupRecord
from ..engine.repository import resolve_prefix
from ..errors import UsageError
from . import trust
from .context import JobContext

log = logging.getLogger(__name__)


def _bucket(record: BackupRecord, rule: str) -> str:
    t = datetime.fromisoformat(record.created)
    if rule == "hourly":
        return t.strftime("%Y-%m-%dT%H")
    if rule == "daily":
        return t.strftime("%Y-%m-%d")
    if rule == "weekly":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if rule == "yearly":
        return t.strftime("%Y")
    return t.strftime("%Y-%m")


def choose_kept(records: list[BackupRecord], policy: Retention) -> set[str]:
    """Ids kept from `records` (one disk set, any order)."""
    newest_first = sorted(records, key=lambda r: r.backup_id, reverse=True)
    kept = {r.backup_id for r in newest_first[: policy.keep_last]}
    if policy.keep_within and newest_first:
        since = datetime.fromisoformat(newest_first[0].created) - timedelta(seconds=policy.keep_within)
        kept |= {r.backup_id for r in newest_first if datetime.fromisoformat(r.created) >= since}
    for rule, count in (("hourly", policy.keep_hourly), ("daily", policy.keep_daily), ("weekly", policy.keep_weekly),
                        ("monthly", policy.keep_monthly), ("yearly", policy.keep_yearly)):
        seen: list[str] = []
        for r in newest_first:
            if len(seen) >= count:
                break
            bucket = _bucket(r, rule)
            if bucket not in seen:
                seen.append(bucket)
                kept.add(r.backup_id)
    return kept


def prune(ctx: JobContext, policy: Retention, dry_run: bool = False,
          only: Callable[[BackupRecord], bool] | None = None) -> dict:
    """Forget what `policy` does not keep; with `only`, among the backups it accepts alone (a
    scheduling policy's retention governs its own servers' backups, not the whole repository's)."""
    if not policy.any():
        raise UsageError("no retention rule given: prune would delete every backup",
                         "pass --keep-last/--keep-daily/--keep-weekly/--keep-monthly or set [retention] in the config")
    repo = ctx.repo
    with ctx.recorded("prune") as report, ctx.locked("exclusive", "prune"):
        groups: dict[tuple[str, ...], list[BackupRecord]] = defaultdict(list)
        records, damaged = repo.scan()  # a damaged record is kept: only `forget` removes it, by name
        for record in records:
            if only is not None and not only(record):
                continue
            groups[tuple(sorted(d.disk_key for d in record.disks))].append(record)
        kept: list[str] = []
        removed: list[str] = []
        for records in groups.values():
            keep = choose_kept(records, policy)
            for r in records:
                (kept if r.backup_id in keep else removed).append(r.backup_id)
        if not dry_run:
            for backup_id in removed:
                repo.forget_backup(backup_id, "prune")
                ctx.catalog.remove_backup(backup_id)
        log.info("prune: %d backups kept, %d %s", len(kept), len(removed), "to forget" if dry_run else "forgotten")
        report.update(kept=sorted(kept), removed=sorted(removed), dry_run=dry_run, damaged=sorted(damaged))
    return report


def forget(ctx: JobContext, refs: list[str]) -> dict:
    """Remove named backups: from the repository (also one whose record is damaged) and from the
    catalog (also one that is missing from the repository). The explicit way to drop what
    `verify` and `list` report, never done implicitly."""
    repo = ctx.repo
    with ctx.recorded("forget") as report, ctx.locked("exclusive", "forget"):
        in_repo = repo.backup_ids()
        in_catalog = [row.backup_id for row in ctx.catalog.backups(repo.id)]
        chosen = [resolve_prefix(ref, sorted(set(in_repo) | set(in_catalog)), f"{repo.location} or the catalog")
                  for ref in refs]
        forgotten, missing = [], []
        for backup_id in dict.fromkeys(chosen):
            if backup_id in in_repo:
                repo.forget_backup(backup_id, "forget")
                forgotten.append(backup_id)
            else:
                missing.append(backup_id)
            ctx.catalog.remove_backup(backup_id)
        trust.forgot(ctx, repo, forgotten)
        report.update(forgotten=forgotten, missing_forgotten=missing)
    return report
