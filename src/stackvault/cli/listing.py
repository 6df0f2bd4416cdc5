"""Commands that show what the repository holds: `list`, `show`."""

from __future__ import annotations

import argparse

from .. import render
from ..errors import CatalogError, StackvaultError
from ..jobs.context import JobContext
from .command import Outcome, command
from .invocation import Invocation
from .parser import share_options


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=None, metavar="file:PATH")
    p.add_argument("--server", default=None, metavar="NAME|ID")
    share_options(p)


@command("list", "list backups", arguments=_list_arguments, renderer=render.listing)
def list_backups(inv: Invocation) -> Outcome:
    from ..jobs.maintenance import sync_catalog
    from ..jobs.trust import rollback

    ctx, args = inv.ctx, inv.args
    ctx.repo  # noqa: B018 - open (and unlock) the repository before the catalog is touched
    try:
        synced = sync_catalog(ctx)
        rows = ctx.catalog.backups(ctx.repo.id, inv.disk_key(args.source))
        unlisted = None
    except CatalogError as exc:  # the repository holds the truth: list its records, and say why
        rows, synced, unlisted = *_records(ctx, inv.disk_key(args.source)), exc
    if args.server:
        rows = [r for r in rows if of_server(r.source or {}, args.server)]
    share = listed_share(args)
    if share is not None:
        rows = [r for r in rows if share.covers_backup(r.source or {})]
    result = render.list_result(rows, synced["missing"], synced["damaged"],
                                rollback(ctx, ctx.repo, synced["ids"]), unlisted)
    if unlisted is not None:  # the interrupted jobs are in the catalog that cannot be read
        return Outcome(result)
    return Outcome(_noting_interrupted(ctx, result))


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup")


@command("show", "show one backup", arguments=_show_arguments, renderer=render.show)
def show(inv: Invocation) -> Outcome:
    from ..jobs.quiesce_proof import with_proof

    repo = inv.ctx.repo
    record = repo.get_backup(repo.resolve(inv.args.backup))
    shown = with_proof(repo, render.record_dict(record))
    try:
        shown = _noting_interrupted(inv.ctx, shown)
    except StackvaultError:
        pass  # `show` reads the repository alone: an unreachable catalog only loses the notes
    return Outcome(shown)


def _records(ctx: JobContext, disk_key: str | None) -> tuple[list, dict]:
    """`list` without a catalog: the repository's backup records (they carry every field a catalog row
    shows), and what `sync_catalog` would have said of them (nothing can be missing without a catalog)."""
    records, damaged = ctx.repo.scan()
    rows = [r for r in records if disk_key is None or any(d.disk_key == disk_key for d in r.disks)]
    return rows, {"missing": [], "ids": ctx.repo.backup_ids(),
                  "damaged": [{"backup_id": b, "problem": e.problem} for b, e in sorted(damaged.items())]}


def of_server(source: dict, server: str) -> bool:
    """Whether a backup whose record's `source` is this was made of the server named (by name or id)."""
    return server in (source.get("server", {}).get("id"), source.get("server", {}).get("name"))


def listed_share(args: argparse.Namespace):  # a cloud.inventory.Selection or None
    """`list` or `copy --availability-zone / --shard`: the backups of one proxy's share (only when asked for)."""
    if not (args.availability_zone or args.shard):
        return None
    from ..cloud.inventory import Selection
    from ..config import parse_shard

    return Selection(availability_zones=list(args.availability_zone),
                     shard=parse_shard(args.shard, "--shard") if args.shard else None)


def _noting_interrupted(ctx: JobContext, result: dict) -> dict:
    """`list` and `show` also name the jobs that stopped without finishing (a killed proxy's)."""
    from ..jobs.maintenance import interrupted_jobs

    stopped = interrupted_jobs(ctx)
    return {**result, "interrupted_jobs": stopped} if stopped else result
