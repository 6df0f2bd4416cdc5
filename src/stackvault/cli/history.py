"""`stackvault jobs`: the job history the catalog records (what ran, how it ended, why, the fix)."""

from __future__ import annotations

import argparse

from .. import render
from ..config import whole_number
from ..domain import JobStatus
from ..errors import UsageError
from .command import COMMANDS, Outcome, command
from .invocation import Invocation
from .parser import checked, enum_choice


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("show",), help="show: one job with every item, its error and fix")
    p.add_argument("job_id", nargs="?", default=None, help="show: the job's id (or a unique prefix)")
    p.add_argument("--status", **enum_choice(JobStatus), default=None, help="only jobs that ended so")
    p.add_argument("--server", default=None, metavar="NAME|ID", help="only backups of this server")
    p.add_argument("--policy", default=None, metavar="NAME", help="only runs of this policy")
    p.add_argument("--kind", choices=sorted({c.recorded_as for c in COMMANDS.values() if c.recorded_as}),
                   default=None, help="only jobs of this command")
    p.add_argument("--last", type=checked(lambda v, o: whole_number(v, o, minimum=1), "--last"), default=None,
                   metavar="N", help="only the newest N")


@command("jobs", "the job history: what ran, how it ended, why (`jobs show ID`: every item, error and fix)",
         arguments=_arguments)
def jobs(inv: Invocation) -> Outcome:
    from ..jobs.history import JobFilter, job_details, job_history

    args, ctx = inv.args, inv.ctx
    ctx.repo  # noqa: B018 - open (and unlock) the repository before the catalog is touched
    if args.action == "show":
        return Outcome(job_details(ctx, args.job_id or "").to_dict(detailed=True), renderer=render.job)
    if args.job_id:
        raise UsageError(f"unexpected {args.job_id!r}", "to see one job: `stackvault jobs show ID`")
    wanted = JobFilter(status=args.status, server=args.server, policy=args.policy, kind=args.kind, last=args.last)
    return Outcome({"jobs": [e.to_dict() for e in job_history(ctx, wanted)]}, renderer=render.jobs)
