"""The job history the catalog records, as `stackvault jobs` shows it: what ran, how it ended, why.

Every recorded job (backup, restore, prune, forget, gc) has a catalog row with its status, its
report and, when it failed, its error line. A row names no server: the server a backup job was for
is in the source of the backup it made, so the rows are joined with their backups here. A failed
job's message is the error line users saw, `<what> (<fix>)` by the error contract (errors.py):
`show` gives the two parts apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..catalog.models import BackupRow, JobRow
from ..domain import JobStatus
from ..errors import NotFoundError, UsageError
from .context import JobContext

#: The fix an error line ends with: the last parenthesised part (errors.StackvaultError's format).
_FIX = re.compile(r"^(?P<what>.*\S)\s+\((?P<fix>[^()]*(?:\([^()]*\)[^()]*)*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class JobFilter:
    status: JobStatus | None = None
    server: str | None = None  # a server's name or id
    policy: str | None = None
    kind: str | None = None
    last: int | None = None  # only the newest N that match


@dataclass
class JobEntry:
    """One job as `stackvault jobs` shows it (the `--json` shape is `to_dict`)."""

    job_id: str
    kind: str
    status: str
    started: str
    finished: str | None
    host: str | None
    backup_id: str | None
    server: dict | None  # {"name", "id"} of the server a backup job was for
    policy: str | None
    message: str
    report: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if not self.finished:
            return None
        return round((datetime.fromisoformat(self.finished) - datetime.fromisoformat(self.started)).total_seconds(), 3)

    def error(self) -> tuple[str, str] | None:
        """(what went wrong, its fix) of a job that failed or was interrupted, else None."""
        if self.status not in (JobStatus.FAILED, JobStatus.INTERRUPTED) or not self.message:
            return None
        parsed = _FIX.match(self.message)
        return (parsed["what"], parsed["fix"]) if parsed else (self.message, "")

    def items(self) -> list[dict]:
        """What the job worked on: a backup's or restore's disks, prune's and forget's backups, a policy
        run's servers and volumes."""
        r = self.report
        if self.kind == "policy":
            return [{"kind": kind, "id": i.get(f"{kind}_id"), "name": i.get("name"), "status": i.get("status"),
                     "backup_id": i.get("backup_id"), "level": i.get("level"), "error": i.get("error") or None}
                    for kind in ("server", "volume") for i in r.get(f"{kind}s", [])]
        if "disks" in r:
            return [{"disk": d.get("name"), "level": d.get("level"), "size": d.get("size"),
                     "bytes_read": d.get("bytes_read"), "bytes_stored": d.get("bytes_stored"),
                     "reason": d.get("reason", "")} for d in r["disks"]]
        if "disk" in r:
            return [{"disk": r["disk"], "size": r.get("size"), "bytes_written": r.get("bytes_written"),
                     "target": r.get("target")}]
        return [{"backup_id": b, "action": action}
                for action in ("removed", "forgotten", "kept") for b in r.get(action, [])]

    def to_dict(self, detailed: bool = False) -> dict:
        d: dict[str, object] = {
            "job_id": self.job_id, "kind": self.kind, "status": self.status, "started": self.started,
            "finished": self.finished, "duration_s": self.duration_s, "host": self.host,
            "backup_id": self.backup_id, "server": self.server, "policy": self.policy, "message": self.message}
        if detailed:
            error = self.error()
            d.update(error=error[0] if error else None, fix=(error[1] or None) if error else None,
                     items=self.items(), warnings=self.report.get("warnings", []), report=self.report)
        return d


def job_history(ctx: JobContext, wanted: JobFilter) -> list[JobEntry]:
    """This repository's jobs, oldest first, that match `wanted` (running ones whose proxy is gone are
    marked interrupted first, as `list` does)."""
    catalog = ctx.catalog
    catalog.reap_jobs(ctx.repo.id)
    with Session(catalog.engine) as s:
        q = select(JobRow).where(JobRow.repo_id == ctx.repo.id)
        if wanted.status:
            q = q.where(JobRow.status == wanted.status.value)
        if wanted.kind:
            q = q.where(JobRow.kind == wanted.kind)
        rows = list(s.scalars(q.order_by(JobRow.started, JobRow.id)))
        ids = {r.backup_id for r in rows if r.backup_id}
        backups = s.scalars(select(BackupRow).where(BackupRow.backup_id.in_(ids)))
        servers = {b.backup_id: _server_of(b) for b in backups}
    entries = [_entry(r, servers.get(r.backup_id or "")) for r in rows]
    if wanted.server:
        entries = [e for e in entries if e.server and wanted.server in (e.server["name"], e.server["id"])]
    if wanted.policy:
        entries = [e for e in entries if e.policy == wanted.policy]
    return entries[-wanted.last:] if wanted.last else entries


def job_details(ctx: JobContext, ref: str) -> JobEntry:
    """One job by its id or a unique prefix of it."""
    if not ref:
        raise UsageError("which job?", "give its id (see `stackvault jobs`)")
    matches = [e for e in job_history(ctx, JobFilter()) if e.job_id.startswith(ref)]
    if not matches:
        raise NotFoundError(f"no job {ref!r} in the catalog of repository {ctx.repo.location}",
                            "see `stackvault jobs` for the ids")
    if len(matches) > 1:
        raise UsageError(f"job id prefix {ref!r} is ambiguous ({len(matches)} jobs)", "give more of the id")
    return matches[0]


def _entry(row: JobRow, server: dict | None) -> JobEntry:
    report = row.report or {}
    return JobEntry(job_id=row.id, kind=row.kind, status=row.status, started=row.started, finished=row.finished,
                    host=row.host, backup_id=row.backup_id, server=server,
                    policy=report.get("policy"), message=row.message or "", report=report)


def _server_of(backup: BackupRow) -> dict | None:
    """{"name", "id"} of the server a backup is of, or None for a disk or volume backup."""
    server = (backup.source or {}).get("server") or {}
    return {"name": server.get("name") or "", "id": server["id"]} if server.get("id") else None
