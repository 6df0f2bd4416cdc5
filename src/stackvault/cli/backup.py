"""`stackvault backup`: disks (`--source`), servers and volumes of a cloud, or the config's `[[jobs]]`."""

from __future__ import annotations

import argparse

from .. import render
from ..config import parse_pairs
from ..domain import BackupLevel, Consistency, JobStatus
from ..errors import UsageError
from .command import EXIT_FAILED, EXIT_OK, Outcome, command
from .invocation import Invocation
from .parser import enum_choice, share_options


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", default=[], metavar="file:PATH",
                   help="a disk image or device, or rbd:POOL/IMAGE@SNAP (an RBD snapshot)")
    p.add_argument("--server", action="append", default=[], metavar="NAME|ID", help="a server (name globs work)")
    p.add_argument("--volume", action="append", default=[], metavar="NAME|ID", help="a Cinder volume")
    p.add_argument("--all", action="store_true", help="every server of the project")
    p.add_argument("--server-tag", action="append", default=[], metavar="TAG", help="servers with this tag")
    p.add_argument("--server-metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="servers with this metadata, e.g. backup=yes")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME|ID")
    p.add_argument("--project", default=None, metavar="ID", help="servers of another project (admin)")
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="run the config's [[jobs]] of this name (globs work: --job '*' runs them all)")
    p.add_argument("--level", **enum_choice(BackupLevel), default=BackupLevel.INCREMENTAL)
    p.add_argument("--name", default="")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--ceph-volume-backend", action="append", default=[], metavar="NAME[=POOL]",
                   help="volumes of this Cinder backend are RBD images in POOL (default volumes): read them "
                        "straight from Ceph ([ceph] volume_backends)")
    p.add_argument("--no-changed-blocks", action="store_true",
                   help="read RBD images in full, without Ceph's list of changed blocks ([ceph] changed_blocks)")
    p.add_argument("--require-consistency", **enum_choice(Consistency), default=None,
                   help="refuse servers whose backup would be less consistent (default: [cloud] require_consistency)")
    share_options(p)


def _job_exit(result: dict) -> int:
    return EXIT_OK if JobStatus(result["status"]).succeeded else EXIT_FAILED


@command("backup", "back up disks, servers or volumes", arguments=_arguments, recorded_as="backup")
def backup(inv: Invocation) -> Outcome:
    args, settings, ctx = inv.args, inv.settings, inv.ctx
    if args.source:
        from ..jobs.backup import back_up_files, backup_report

        record = back_up_files(ctx, args.source, args.level, args.name, parse_pairs(args.tag, "tag"), inv.progress)
        return Outcome(backup_report(record), renderer=render.backup)
    from ..cloud.connection import connect
    from ..cloud.inventory import Selection
    from ..jobs.cloud_backup import back_up_cloud, back_up_jobs

    if args.job:
        import fnmatch

        jobs = [j for j in settings.jobs if any(fnmatch.fnmatchcase(j.name, p) for p in args.job)]
        if not jobs:
            names = ", ".join(j.name for j in settings.jobs) or "none"
            raise UsageError(f"no [[jobs]] in the config match {', '.join(args.job)}", f"the config has: {names}")
        ctx.repo  # noqa: B018 - fail on a bad repository before touching any cloud
        result = back_up_jobs(ctx, jobs, args.level, connect, inv.progress)
        return Outcome(result, _job_exit(result), render.cloud_backup)

    selection = Selection(servers=args.server, volumes=args.volume, all_servers=args.all, tags=args.server_tag,
                          metadata=parse_pairs(args.server_metadata, "server-metadata"), exclude=args.exclude,
                          project=args.project, **inv.share)
    if selection.empty():
        raise UsageError("nothing to back up", "pass --source file:PATH, --server, --volume, --all or --server-tag")
    if args.require_consistency:
        settings.cloud.require_consistency = args.require_consistency
    ctx.repo  # noqa: B018 - fail on a bad repository before touching the cloud
    result = back_up_cloud(ctx, connect(settings.cloud.os_cloud), selection, args.level, inv.progress)
    return Outcome(result, _job_exit(result), render.cloud_backup)
