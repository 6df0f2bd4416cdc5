"""Commands of the service face: `run-policy` (one policy once, for cron) and `server` (docs/service.md)."""

from __future__ import annotations

import argparse
import threading

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


def _server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", metavar="HOST:PORT", default=None,
                   help="also serve the Prometheus metrics on http://HOST:PORT/metrics (docs/monitoring.md)")


@command("server", "run the config's policies when they are due, until SIGTERM (SIGHUP reloads the config)",
         arguments=_server_arguments, renderer=render.server_stopped)
def server(inv: Invocation) -> Outcome:
    from ..cloud.connection import connect
    from ..observe.job_end import job_end
    from ..observe.metrics import listen
    from ..observe.notify import job_ended
    from ..service import policy_run
    from ..service.server import serve

    current = [inv.settings]

    def reload() -> Settings:  # SIGHUP: the file again, with this command line's overrides
        current[0] = Invocation.from_args(inv.args).settings
        return current[0]

    def notify(report: dict) -> None:  # a run that failed or warned, to the [notify] urls of the config now
        job_ended(current[0].notify, job_end("policy", report))

    exporter = None
    if inv.args.metrics:
        exporter, _ = listen(inv.args.metrics, inv.settings.catalog_url, inv.settings.cloud.require_consistency)
        threading.Thread(target=exporter.serve_forever, name="sv-metrics", daemon=True).start()
    policy_run.run_finished_hooks.append(notify)
    try:
        return Outcome(serve(reload, inv.args.passphrase_file, connect))
    finally:
        policy_run.run_finished_hooks.remove(notify)
        if exporter is not None:
            exporter.shutdown()
            exporter.server_close()
