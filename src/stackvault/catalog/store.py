"""Reading and writing the catalog; `rebuild` recreates it from the repository alone.

The URL picks the database: SQLite (the default, one file in the working directory) or PostgreSQL
(`postgresql+psycopg://user@host/db`, for several proxies sharing one catalog). Opening a catalog
brings its schema to this code's revision (`schema.upgrade`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..engine.manifest import BackupRecord
from ..errors import LockedError, StackvaultError, UsageError
from . import leases, locks, schema
from .connect import open_engine, unopenable, writer
from .models import BackupRow, DiskRow, JobRow


class Catalog:
    """One catalog database, opened (and migrated) once per job; every method is its own transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = open_engine(url)
            schema.upgrade(self.engine, url)
        except ImportError as exc:  # the URL names a database driver that is not installed
            raise UsageError(f"cannot open catalog {schema.safe_url(url)}: the Python module {exc.name} is missing",
                             "install it, or for PostgreSQL use postgresql+psycopg:// (psycopg is installed "
                             "with stackvault)") from None
        except SQLAlchemyError as exc:
            raise unopenable(url, f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0]}") from None
        self._session = sessionmaker(writer(self.engine), expire_on_commit=False)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._heartbeat = leases.Heartbeat(self._renew)

    def session(self) -> Session:
        """A session for changes: on SQLite its transaction takes the write lock when it begins."""
        return self._session()

    def reader(self) -> Session:
        """A session for reads only: on SQLite it takes no write lock, so a poll reading it every second
        keeps no writer waiting."""
        return self._reader()

    def advisory_lock(self, name: str, shared: bool = False, wait_s: float = 0.0) -> AbstractContextManager[None]:
        """A named lock between proxies sharing this catalog, released when the holder dies (see `locks`).

        `with catalog.advisory_lock(f"repo:{repo.id}", shared=True, wait_s=30):` around a backup,
        exclusive around prune/gc; raises LockedError when not granted within `wait_s` seconds.
        """
        return locks.advisory_lock(self.engine, self.url, name, shared=shared, wait_s=wait_s)

    @contextmanager
    def repository_lock(self, repo_id: str, location: str, shared: bool, wait_s: float) -> Iterator[None]:
        """The advisory lock on one repository: shared by backups, exclusive for prune and gc.

        When it is not granted, the error names the job holding it (from its running job row)."""
        with ExitStack() as stack:
            try:
                stack.enter_context(self.advisory_lock(f"repo:{repo_id}", shared=shared, wait_s=wait_s))
            except LockedError:
                raise self._busy(repo_id, location, shared, wait_s) from None
            yield

    def _busy(self, repo_id: str, location: str, shared: bool, wait_s: float) -> LockedError:
        with self._reader() as s:
            q = select(JobRow).where(JobRow.repo_id == repo_id, JobRow.status == "running",
                                     JobRow.id.not_in(self._heartbeat.jobs()))
            if shared:  # only exclusive jobs keep a shared one out
                q = q.where(JobRow.kind.in_(("gc", "prune")))
            holder = s.scalars(q.order_by(JobRow.started)).first()
        if holder is None:
            return LockedError(f"catalog lock on repository {location} is held by another proxy "
                               f"(waited {wait_s:g} s)", "retry later or raise --wait")
        return LockedError(f"another proxy is running {holder.kind} on repository {location} since "
                           f"{holder.started} (job {holder.id} on host {holder.host}, pid {holder.pid}; "
                           f"waited {wait_s:g} s)", "retry later or raise --wait")

    def close(self) -> None:
        """Close pooled connections (also done at exit); the catalog can still be used afterwards."""
        self.engine.dispose()

    # -- jobs ------------------------------------------------------------------------------------
    def start_job(self, kind: str, repo_id: str) -> str:
        """A `running` row whose lease this process renews until `finish_job`; stopped jobs of the
        repository are marked interrupted first."""
        self.reap_jobs(repo_id)
        job_id = uuid.uuid4().hex
        row = JobRow(id=job_id, kind=kind, repo_id=repo_id, started=_now(), status="running")
        leases.stamp(row, time.time())
        with self.session() as s, s.begin():
            s.add(row)
        self._heartbeat.add(job_id)
        return job_id

    def finish_job(self, job_id: str, status: str, message: str = "", backup_id: str | None = None,
                   report: dict | None = None) -> None:
        self._heartbeat.discard(job_id)
        with self.session() as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is None:
                return
            row.finished, row.status, row.message = _now(), status, message[:2000]
            row.backup_id, row.report = backup_id, report or {}

    def _renew(self, job_ids: set[str], now: float) -> None:
        with self.session() as s, s.begin():
            s.execute(update(JobRow).where(JobRow.id.in_(job_ids), JobRow.status == "running")
                      .values(heartbeat=leases.iso(now), lease_expires=now + leases.lease_s()))

    def reap_jobs(self, repo_id: str) -> list[str]:
        """Mark this repository's running jobs whose holder is gone as interrupted; returns what it marked."""
        running = select(JobRow).where(JobRow.repo_id == repo_id, JobRow.status == "running")
        with self._reader() as s:  # the usual case, nothing stopped, takes no write lock
            if not any(leases.stopped(row, time.time()) for row in s.scalars(running)):
                return []
        marked = []
        with self.session() as s, s.begin():
            for row in s.scalars(running):  # again, under the write lock: another proxy may have marked it
                if leases.stopped(row, time.time()):
                    row.status, row.finished, row.message = "interrupted", row.heartbeat, leases.interruption(row)
                    marked.append(row.message)
        return marked

    def job_status(self, job_id: str) -> str | None:
        """A job's status (None: no such job)."""
        with self._reader() as s:
            return s.scalar(select(JobRow.status).where(JobRow.id == job_id))

    def interrupted_jobs(self, repo_id: str, since: str) -> list[JobRow]:
        """This repository's jobs marked interrupted that were last seen at or after `since` (ISO time)."""
        with self._reader() as s:
            return list(s.scalars(select(JobRow).where(JobRow.repo_id == repo_id, JobRow.status == "interrupted",
                                                       JobRow.finished >= since).order_by(JobRow.finished)))

    # -- backups ---------------------------------------------------------------------------------
    def add_backup(self, repo_id: str, record: BackupRecord) -> None:
        with self.session() as s, s.begin():
            s.merge(_backup_row(repo_id, record))

    def remove_backup(self, backup_id: str) -> None:
        with self.session() as s, s.begin():
            row = s.get(BackupRow, backup_id)
            if row is not None:
                s.delete(row)

    def backups(self, repo_id: str, disk_key: str | None = None) -> list[BackupRow]:
        with self._reader() as s:
            q = select(BackupRow).where(BackupRow.repo_id == repo_id).order_by(BackupRow.created, BackupRow.backup_id)
            if disk_key:
                q = q.where(BackupRow.disks.any(DiskRow.disk_key == disk_key))
            rows = list(s.scalars(q))
            for r in rows:
                _ = r.disks  # load while the session is open
            return rows

    def rebuild(self, repo_id: str, records: list[BackupRecord]) -> int:
        """Replace this repository's backups with those in `records` (the repository's truth)."""
        try:
            with self.session() as s, s.begin():
                ids = select(BackupRow.backup_id).where(BackupRow.repo_id == repo_id)
                s.execute(delete(DiskRow).where(DiskRow.backup_id.in_(ids)))
                s.execute(delete(BackupRow).where(BackupRow.repo_id == repo_id))
                for record in records:
                    s.add(_backup_row(repo_id, record))
        except SQLAlchemyError as exc:
            raise StackvaultError(f"catalog rebuild failed: {exc}", "check the catalog database") from None
        return len(records)


def _backup_row(repo_id: str, r: BackupRecord) -> BackupRow:
    row = BackupRow(
        backup_id=r.backup_id, repo_id=repo_id, created=r.created, finished=r.finished, level=r.level,
        requested_level=r.requested_level, status=r.status, name=r.name, host=r.host,
        consistency=r.consistency, source=r.source, tags=r.tags, size=r.size, bytes_read=r.bytes_read,
        bytes_stored=r.bytes_stored, duration_s=r.duration_s,
    )
    row.disks = [
        DiskRow(position=d.position, name=d.name, disk_key=d.disk_key, size=d.size, block_size=d.block_size,
                level=d.level, bytes_read=d.bytes_read, bytes_stored=d.bytes_stored,
                blocks_total=d.blocks_total, blocks_changed=d.blocks_changed)
        for d in r.disks
    ]
    return row


def _now() -> str:
    """A job's start or end, to the microsecond: jobs of one proxy often start within one second, and
    `stackvault jobs` lists them in the order they ran (ISO strings of one zone sort as times)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
