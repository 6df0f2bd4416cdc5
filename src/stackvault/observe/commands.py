"""`stackvault metrics` and `stackvault notify`, and the notification sent when a job's command ends."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ..config import Settings, load_settings, seconds
from ..errors import StackvaultError, UsageError
from .notify import Event, Item, JobEnd

Command = Callable[[str, str], argparse.ArgumentParser]
Outcome = tuple[dict, Callable[[dict], str], int]

#: Commands that run a job whose end may be notified (with `state`, only `state backup`).
JOB_COMMANDS = ("backup", "restore", "verify", "prune", "gc", "forget", "state")
DAY_S = 86400.0


def add_parsers(cmd: Command) -> None:
    """Adds the commands to the `stackvault` parser; `cmd(name, help)` makes one subcommand."""
    p = cmd("metrics", "Prometheus metrics from the catalog: into a node_exporter textfile, or served on /metrics")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--textfile", metavar="PATH",
                     help="write them to this *.prom file, atomically (node_exporter's textfile directory)")
    out.add_argument("--listen", metavar="HOST:PORT", help="serve them on http://HOST:PORT/metrics until stopped")
    p = cmd("notify", "send notifications to the [notify] urls")
    p.add_argument("--summary", action="store_true", required=True,
                   help="the summary of the jobs the catalog recorded in the period (daily, from a timer)")
    p.add_argument("--period", type=lambda v: seconds(v, "--period", positive=True), default=DAY_S,
                   metavar="SECONDS", help="the period the summary covers, up to now (default 86400)")


def run(args: argparse.Namespace, settings: Settings) -> Outcome:
    if args.command == "notify":
        return _summary(args, settings)
    from . import metrics

    required = settings.cloud.require_consistency
    if args.textfile:
        written = metrics.write_textfile(args.textfile, settings.catalog_url, required)
        return written, lambda r: f"Metrics written to {r['textfile']} ({r['bytes']} bytes)", 0
    return metrics.serve(args.listen, settings.catalog_url, required), lambda r: "", 0


def _summary(args: argparse.Namespace, settings: Settings) -> Outcome:
    from ..catalog import Catalog
    from .metrics import catalog_rows
    from .notify import send
    from .summary import summary

    if not settings.notify.urls:
        raise UsageError("no notification targets", "add urls = [...] to [notify] in the config (docs/monitoring.md)")
    if Event.SUMMARY not in settings.notify.on:
        return ({"sent_to": [], "skipped": "summary is not in [notify] on"},
                lambda r: f"No summary sent: {r['skipped']}", 0)
    title, body = summary(*catalog_rows(Catalog(settings.catalog_url).engine), args.period)
    reached = send(settings.notify, title, body, Event.SUMMARY)
    result = {"title": title, "sent_to": reached, "targets": len(settings.notify.urls)}
    return result, lambda r: f"Summary sent to {len(r['sent_to'])} of {r['targets']} targets: {r['title']}", \
        0 if reached else 1


def notified(run: Callable[[argparse.Namespace], Outcome], args: argparse.Namespace) -> Outcome:
    """Runs the command, then notifies `[notify] urls` when it was a job that failed or warned."""
    if args.command not in JOB_COMMANDS or (args.command == "state" and args.action != "backup"):
        return run(args)
    started = time.time()
    try:
        outcome = run(args)
    except StackvaultError as exc:
        _notify(args, started, None, exc)
        raise
    _notify(args, started, outcome[0], None)
    return outcome


def _notify(args: argparse.Namespace, started: float, result: dict | None, error: StackvaultError | None) -> None:
    try:
        settings = load_settings(args.config, repo=args.repo, workdir=args.workdir, catalog=args.catalog)
    except StackvaultError:
        return  # the command itself said what is wrong with the settings
    if not settings.notify.urls:
        return
    from .notify import job_ended

    kind = "state backup" if args.command == "state" else args.command
    if error is not None:
        end = JobEnd(None, kind, "failed", message=str(error))
    else:
        assert result is not None
        end = job_end(kind, result)
    if end.event is None:
        return
    end.job_id = end.job_id or _recorded_job(settings.catalog_url, started)
    job_ended(settings.notify, end)


def job_end(kind: str, result: dict) -> JobEnd:
    """A job's end from the report its command prints (docs/cli.md)."""
    items = [Item(name=str(i.get("name") or i.get("server_id") or i.get("volume_id") or "?"),
                  status=str(i.get("status", "")), error=str(i.get("error") or ""), consistency=i.get("consistency"),
                  warnings=list(i.get("warnings") or []))
             for i in result.get("servers", []) + result.get("volumes", []) + result.get("job_errors", [])]
    status = str(result.get("status") or "success")
    message = ""
    if kind == "verify" and result.get("ok") is False:
        found = {k: len(result.get(k) or []) for k in ("bad_chunks", "bad_indexes", "bad_records", "bad_key_slots",
                                                       "missing_backups")}
        message = "verify found damage: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in found.items() if n)
    elif result.get("warnings"):
        message = "; ".join(str(w) for w in result["warnings"])
    return JobEnd(result.get("job_id") or None, kind, status, items, result.get("consistency"), message)


def _recorded_job(catalog_url: str, started: float) -> str | None:
    """The id of the newest job row this process started since `started` (None when there is none,
    e.g. a backup refused before it began, or the catalog cannot be read)."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from ..catalog import Catalog
    from ..catalog.connect import sqlite_path
    from ..catalog.models import JobRow
    from ..engine.repository import hostname

    since = datetime.fromtimestamp(int(started), UTC).isoformat(timespec="seconds")
    try:
        path = sqlite_path(catalog_url)
        if path is not None and not os.path.exists(path):
            return None  # the job never got as far as the catalog: do not make one now
        with Session(Catalog(catalog_url).engine) as s:
            return s.scalars(select(JobRow.id).where(JobRow.host == hostname(), JobRow.pid == os.getpid(),
                                                     JobRow.started >= since).order_by(JobRow.started.desc())).first()
    except (StackvaultError, SQLAlchemyError):
        return None
