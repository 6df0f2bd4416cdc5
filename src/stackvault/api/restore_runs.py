"""A restore started through the API or the dashboard: one background thread per restore, its state
kept in the API process (to follow it while it runs) and in the catalog as a `restore` job (its
history, once it ends).

The thread reads the repository with the service's own credentials and writes volumes through the
proxy's server (`[cloud] os_cloud`), and creates everything the user gets (image, volumes handed
over, server) with a Keystone trust of that user: api/delegation.py says why it can land nowhere but
the user's project.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from ..domain import JobStatus
from ..errors import StackvaultError

if TYPE_CHECKING:
    from .service import ApiService

log = logging.getLogger("stackvault.api")


class RestorePhase(StrEnum):
    """Where a restore is: `restoring` its disks, then `booting` the server, then `active` (the server
    is ACTIVE), or it ended `failed` or `cancelled` (what it made is removed)."""

    RESTORING = "restoring"
    BOOTING = "booting"
    ACTIVE = "active"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (RestorePhase.ACTIVE, RestorePhase.FAILED, RestorePhase.CANCELLED)


class RestoreCancelled(StackvaultError):
    """Raised inside the restore (from its progress callback) when its user cancels it."""


@dataclass
class RestoreRun:
    id: str  # the catalog job's id
    project_id: str  # where the server lands: the trustor's project
    user_id: str
    backup_id: str
    server_name: str
    flavor: str | None
    network_ref: str | None  # a network's name or id, as the caller gave it
    size: int  # bytes of the backup's disks
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    phase: RestorePhase = RestorePhase.RESTORING
    bytes_written: int = 0
    server_id: str | None = None
    error: str | None = None
    fix: str | None = None
    finished: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, disk: str, size: int) -> Callable[[int], None]:
        """restore_server's progress hook: counts bytes, and is where a cancel takes effect."""
        def advance(n: int) -> None:
            if self.cancel.is_set():
                raise RestoreCancelled(f"restore {self.id} was cancelled", "start it again when needed")
            self.bytes_written += n
            if self.bytes_written >= self.size:
                self.phase = RestorePhase.BOOTING
        return advance

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.phase.value, "project_id": self.project_id, "backup_id": self.backup_id,
                "name": self.server_name, "flavor": self.flavor, "network": self.network_ref, "started": self.started,
                "finished": self.finished, "size": self.size, "bytes_written": self.bytes_written,
                "server_id": self.server_id, "error": self.error, "fix": self.fix}

    @classmethod
    def from_report(cls, job_id: str, report: dict) -> RestoreRun:
        """A finished restore as its catalog job recorded it (after the API process restarted)."""
        run = cls(id=job_id, project_id=report["project_id"], user_id=report.get("user_id", ""),
                  backup_id=report["backup_id"], server_name=report["name"], flavor=report.get("flavor"),
                  network_ref=report.get("network"), size=report.get("size", 0), started=report.get("started", ""))
        run.phase, run.bytes_written = RestorePhase(report["status"]), report.get("bytes_written", 0)
        run.server_id, run.error, run.fix = report.get("server_id"), report.get("error"), report.get("fix")
        run.finished = report.get("finished")
        return run


def run_restore(svc: ApiService, run: RestoreRun, trust_id: str) -> None:
    """The thread's body: restore the backup to a new server in the trustor's project, then record the job."""
    from ..cloud.connection import connect
    from ..jobs.cloud_restore import restore_server
    from .delegation import trust_connection

    ctx = svc.context()
    try:
        target = trust_connection(svc, trust_id)
        with ctx.lock("read", f"restore {run.backup_id}"):
            record = ctx.repo.get_backup(run.backup_id)
            result = restore_server(ctx, connect(svc.settings.cloud.os_cloud), record, run.server_name,
                                    flavor=run.flavor, network=run.network_ref, progress=run.progress, target=target)
        run.server_id, run.phase = result["id"], RestorePhase.ACTIVE
    except RestoreCancelled as exc:
        run.phase, run.error, run.fix = RestorePhase.CANCELLED, exc.message, exc.fix
    except StackvaultError as exc:
        run.phase, run.error, run.fix = RestorePhase.FAILED, exc.message, exc.fix
    except Exception as exc:  # the thread's last word: the user follows it there
        log.exception("restore %s failed", run.id)
        run.phase, run.error, run.fix = RestorePhase.FAILED, f"{exc.__class__.__name__}: {exc}", "see the API's log"
    run.finished = datetime.now(UTC).isoformat(timespec="seconds")
    status = JobStatus.SUCCESS if run.phase is RestorePhase.ACTIVE else JobStatus.FAILED
    message = f"{run.error} ({run.fix})" if run.error else ""
    ctx.finish_reading_job(run.id, status.value, message, backup_id=run.backup_id,
                           report={**run.to_dict(), "user_id": run.user_id, "trust_id": trust_id})
