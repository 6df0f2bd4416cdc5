"""The notification sent when a job's command ends: `[notify] urls` hear of a failure or warnings."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from ..config import load_settings
from ..errors import StackvaultError
from .notify import Item, JobEnd

T = TypeVar("T")

#: Commands that run a job whose end may be notified (with `state`, only `state backup`).
JOB_COMMANDS = ("backup", "restore", "verify", "prune", "gc", "forget", "copy", "state", "run-policy")


def notified(run: Callable[[argparse.Namespace], T], result_of: Callable[[T], dict],
             args: argparse.Namespace) -> T:
    """Runs the command, then notifies `[notify] urls` when it was a job that failed or warned."""
    if args.command not in JOB_COMMANDS or (args.command == "state" and args.action != "backup"):
        return run(args)
    started = time.time()
    try:
        outcome = run(args)
    except StackvaultError as exc:
        _notify(args, started, None, exc)
        raise
    _notify(args, started, result_of(outcome), None)
    return outcome


def _notify(args: argparse.Namespace, started: float, result: dict | None, error: StackvaultError | None) -> None:
    try:
        settings = load_settings(args.config, repo=args.repo, workdir=args.workdir, catalog=args.catalog)
    except StackvaultError:
        return  # the command itself said what is wrong with the settings
    if not settings.notify.urls:
        return
    from .notify import job_ended

    kind = {"state": "state backup", "run-policy": "policy"}.get(args.command, args.command)
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
