"""`stackvault restore`: a disk of a backup to a file or device, or into the cloud (image, volume, server)."""

from __future__ import annotations

import argparse

from .. import render
from ..errors import UsageError
from .command import Lock, LockKind, Outcome, command
from .invocation import Invocation

_CLOUD_TARGETS = ("image", "volume", "server")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup")
    p.add_argument("--to", required=True, metavar="file:PATH|image:NAME|volume:NAME|server:NAME")
    p.add_argument("--format", choices=("raw", "qcow2"), default=None)
    p.add_argument("--disk", default=None, help="which disk of a backup with several")
    p.add_argument("--force", action="store_true", help="overwrite an existing target")
    p.add_argument("--flavor", default=None, help="server restore: flavor (default: the original)")
    p.add_argument("--network", default=None, help="server restore: network (default: the original)")
    p.add_argument("--key-name", default=None, help="server restore: key pair (default: the original)")
    p.add_argument("--in-place", action="store_true",
                   help="server restore: put the root disk back into the existing server NAME (Nova's rebuild: "
                        "same id, ports and volumes)")
    p.add_argument("--file", action="append", default=[], metavar="PATH",
                   help="restore only this file or directory of the disk into --to file:DIR (repeat for several)")


def _lock(args: argparse.Namespace) -> Lock | None:
    """A cloud restore reads under the CLI's read lock; a file restore's job takes its own."""
    kind, _, name = args.to.partition(":")
    if kind in _CLOUD_TARGETS and name:
        return Lock(LockKind.READ, f"restore {args.backup}", warn_unlocked=True)
    return None


@command("restore", "restore a disk of a backup", arguments=_arguments, lock=_lock, recorded_as="restore")
def restore(inv: Invocation) -> Outcome:
    args, ctx = inv.args, inv.ctx
    if args.file:
        from .files import restore_files

        return restore_files(inv)
    kind, _, name = args.to.partition(":")
    if kind not in _CLOUD_TARGETS:
        from ..jobs.restore import parse_target
        from ..jobs.restore import restore as restore_file

        target = parse_target(args.to, args.format, args.force, inv.settings.workdir)
        return Outcome(restore_file(ctx, args.backup, target, args.disk, inv.progress), renderer=render.restore)
    from ..cloud.connection import connect
    from ..jobs import cloud_restore

    if not name:
        raise UsageError(f"restore target {args.to!r} names nothing", f"write --to {kind}:NAME")
    record = ctx.repo.get_backup(ctx.repo.resolve(args.backup))
    conn = connect(ctx.settings.cloud.os_cloud)
    if args.in_place and kind != "server":
        raise UsageError("--in-place restores into an existing server", "write --to server:NAME")
    if args.in_place:
        if args.flavor or args.network or args.key_name:
            raise UsageError("an in-place restore keeps the server's flavor, network and key pair",
                             "drop --flavor, --network and --key-name, or restore to a new server")
        result = cloud_restore.restore_in_place(ctx, conn, record, name, force=args.force, progress=inv.progress)
    elif kind == "server":
        result = cloud_restore.restore_server(ctx, conn, record, name, flavor=args.flavor, network=args.network,
                                              key_name=args.key_name, force=args.force, progress=inv.progress)
    else:
        disk = record.disk(args.disk)
        to = cloud_restore.restore_to_image if kind == "image" else cloud_restore.restore_to_volume
        result = to(ctx, conn, record, disk, name, force=args.force, progress=inv.progress)
    return Outcome(result, renderer=render.cloud_restore)
