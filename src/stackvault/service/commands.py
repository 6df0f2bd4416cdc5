"""The `run-policy` and `server` commands: what the CLI's dispatcher calls, and their human output."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..config import Settings, load_settings
from ..jobs.context import JobContext


def run_command(command: str, args: argparse.Namespace, settings: Settings,
                ctx: JobContext) -> tuple[dict, Callable[[dict], str], int]:
    from ..cloud.connection import connect

    if command == "run-policy":
        from .policy_run import run_policy

        ctx.repo  # noqa: B018 - fail on a bad repository before touching the cloud
        report = run_policy(ctx, args.policy, connect)
        return report, render_run, 0 if report["status"] in ("success", "warning") else 1
    from .server import serve

    def reload() -> Settings:  # SIGHUP: the file again, with this command line's overrides
        fresh = load_settings(args.config, repo=args.repo, workdir=args.workdir, catalog=args.catalog,
                              lock_wait=args.wait)
        if args.os_cloud:
            fresh.cloud.os_cloud = args.os_cloud
        return fresh

    return serve(reload, args.passphrase_file, connect), render_stopped, 0


def render_run(report: dict) -> str:
    lines = [f"Policy {report['policy']}: {report['status']} ({report['level']}, run for {report['slot']})"]
    for item in report.get("servers", []) + report.get("volumes", []):
        kind = "server" if "server_id" in item else "volume"
        line = f"  {kind} {item.get('name')}: {item['status']}"
        if item.get("backup_id"):
            line += f", backup {item['backup_id']} ({item.get('level')})"
        if item.get("error"):
            line += f": {item['error']}"
        lines.append(line)
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    if "prune" in report:
        pruned = report["prune"]
        lines.append(f"  prune: {pruned['error']}" if "error" in pruned
                     else f"  prune: {len(pruned['removed'])} forgotten, {pruned['kept']} kept")
    if "gc" in report:
        collected = report["gc"]
        lines.append(f"  gc: {collected.get('error') or str(collected.get('chunks_deleted')) + ' chunks deleted'}")
    if "verify" in report:
        verified = report["verify"]
        lines.append(f"  verify: {verified.get('error') or verified['status']}"
                     + (f" ({verified.get('chunks_read')} chunks read, share {verified['sample']})"
                        if verified.get("sample") else ""))
    if "state" in report:
        lines.append(f"  proxy state: {report['state'].get('error') or 'saved as ' + report['state']['state_id']}")
    return "\n".join(lines)


def render_stopped(result: dict) -> str:
    return f"stackvault server stopped after finishing {result['runs_finished']} runs"
