"""Commands of the service face: `run-policy` (one policy once, for cron) and `server` (docs/service.md)."""

from __future__ import annotations

import argparse

from .. import render
from ..config import Settings
from .command import EXIT_FAILED, EXIT_OK, Outcome, command
from .invocation import Invocation


def _run_policy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", metavar="NAME")


@command("run-policy", "run one [policy.NAME] of the config once, now (backup, prune, gc, verify)",
         arguments=_run_policy_arguments, renderer=render.policy_run, recorded_as="policy")
def run_policy(inv: Invocation) -> Outcome:
    from ..cloud.connection import connect
    from ..service.policy_run import run_policy as run

    inv.ctx.repo  # noqa: B018 - fail on a bad repository before touching the cloud
    report = run(inv.ctx, inv.args.policy, connect)
    return Outcome(report, EXIT_OK if report["status"] in ("success", "warning") else EXIT_FAILED)


@command("server", "run the config's policies when they are due, until SIGTERM (SIGHUP reloads the config)",
         renderer=render.server_stopped)
def server(inv: Invocation) -> Outcome:
    from ..cloud.connection import connect
    from ..service.server import serve

    def reload() -> Settings:  # SIGHUP: the file again, with this command line's overrides
        return Invocation.from_args(inv.args).settings

    return Outcome(serve(reload, inv.args.passphrase_file, connect))
