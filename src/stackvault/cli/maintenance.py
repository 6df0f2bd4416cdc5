"""Commands that check and tidy the repository and the cloud: `verify`, `forget`, `prune`, `gc`, `cleanup`."""

from __future__ import annotations

import argparse
from dataclasses import replace

from .. import render
from ..config import seconds, whole_number
from ..errors import UsageError
from .command import EXIT_DAMAGED, EXIT_FAILED, EXIT_OK, Outcome, command
from .invocation import Invocation
from .parser import checked

_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _cleanup_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--bases", action="store_true",
                   help="also delete the Cinder snapshots kept as bases of the next backups "
                        "(all, or those of --volume)")
    p.add_argument("--volume", action="append", default=[], metavar="NAME|ID", help="with --bases: only this volume's")
    p.add_argument("--repository", default=None, metavar="ID",
                   help="with --bases: only the bases kept for this repository id (e.g. an abandoned one)")


@command("cleanup", "remove what killed jobs left in the cloud (found by tag)", arguments=_cleanup_arguments,
         renderer=render.cleanup)
def cleanup(inv: Invocation) -> Outcome:
    from ..cloud.connection import connect
    from ..jobs.cleanup import cleanup as clean_up

    args, settings = inv.args, inv.settings
    if args.volume and not args.bases:
        raise UsageError("cleanup --volume names whose bases to release", "add --bases, or leave out --volume")
    if args.repository and not args.bases:
        raise UsageError("cleanup --repository names whose bases to release",
                         "add --bases, or leave out --repository")
    conn = connect(settings.cloud.os_cloud)
    result = clean_up(conn, dry_run=args.dry_run, proxy_server=settings.cloud.proxy_server, release=args.bases,
                      volumes=args.volume or None, repository=args.repository)
    return Outcome(result, EXIT_FAILED if result["failed"] else EXIT_OK)


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup", nargs="?")
    p.add_argument("--deep", action="store_true", help="read and re-hash every chunk")


@command("verify", "check the repository", arguments=_verify_arguments, renderer=render.verify, recorded_as="verify")
def verify(inv: Invocation) -> Outcome:
    from ..jobs.verify import verify as check

    verified = check(inv.ctx, inv.args.backup, inv.args.deep, inv.progress)
    return Outcome(verified.to_dict(), EXIT_OK if verified.ok else EXIT_DAMAGED)


def _forget_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup", nargs="+", help="backup id (or a unique prefix)")


@command("forget", "remove named backups: also one whose record is damaged or that is missing from the repository",
         arguments=_forget_arguments, renderer=render.forget, recorded_as="forget")
def forget(inv: Invocation) -> Outcome:
    from ..jobs.prune import forget as forget_backups

    return Outcome(forget_backups(inv.ctx, inv.args.backup))


def _prune_arguments(p: argparse.ArgumentParser) -> None:
    for rule in _RULES:
        p.add_argument(f"--keep-{rule}", type=checked(whole_number, f"--keep-{rule}"), default=None, metavar="N")
    p.add_argument("--keep-within", type=checked(seconds, "--keep-within"), default=None, metavar="DURATION",
                   help="keep every backup made within this long of a disk's newest one (e.g. 7d)")
    p.add_argument("--dry-run", action="store_true")


@command("prune", "forget backups by retention policy", arguments=_prune_arguments, renderer=render.prune,
         recorded_as="prune")
def prune(inv: Invocation) -> Outcome:
    from ..jobs.prune import prune as prune_backups

    args = inv.args  # the options override the config's [retention] rule by rule (keep_within etc. stay)
    policy = replace(inv.settings.retention, **{f"keep_{r}": getattr(args, f"keep_{r}") for r in (*_RULES, "within")
                                                if getattr(args, f"keep_{r}") is not None})
    return Outcome(prune_backups(inv.ctx, policy, args.dry_run))


def _gc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grace", type=checked(seconds, "--grace"), default=0.0, metavar="DURATION",
                   help="keep unreferenced chunks younger than this (seconds, or 30m, 12h, 7d)")
    p.add_argument("--dry-run", action="store_true")


@command("gc", "delete chunks no backup references", arguments=_gc_arguments, renderer=render.gc, recorded_as="gc")
def gc(inv: Invocation) -> Outcome:
    from ..jobs.gc import gc as collect

    return Outcome(collect(inv.ctx, inv.args.grace, inv.args.dry_run))
