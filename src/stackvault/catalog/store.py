"""Reading and writing the catalog; `rebuild` recreates it from the repository alone.

The URL picks the database: SQLite (the default, one file in the working directory) or PostgreSQL
(`postgresql+psycopg://user@host/db`, for several proxies sharing one catalog). Opening a catalog
brings its schema to this code's revision (`schema.upgrade`).
"""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager
from datetime import datetime, timezone

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..engine.manifest import BackupRecord
from ..errors import StackvaultError, UsageError
from . import locks, schema
from .connect import open_engine, writer
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
        except OSError as exc:  # the SQLite file's folder cannot be made
            raise UsageError(f"cannot open catalog {schema.safe_url(url)}: {exc.strerror}: {exc.filename}",
                             "check --catalog / STACKVAULT_CATALOG, or --workdir") from None
        except SQLAlchemyError as exc:
            raise UsageError(f"cannot open catalog {schema.safe_url(url)}: {exc.__class__.__name__}: "
                             f"{str(exc).strip().splitlines()[0]}",
                             "check --catalog / STACKVAULT_CATALOG") from None
        self._session = sessionmaker(writer(self.engine), expire_on_commit=False)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        """A session for changes: on SQLite its transaction takes the write lock when it begins."""
        return self._session()

    def advisory_lock(self, name: str, shared: bool = False, wait_s: float = 0.0) -> AbstractContextManager[None]:
        """A named lock between proxies sharing this catalog, released when the holder dies (see `locks`).

        `with catalog.advisory_lock(f"repo:{repo.id}", shared=True, wait_s=30):` around a backup,
        exclusive around prune/gc; raises LockedError when not granted within `wait_s` seconds.
        """
        return locks.advisory_lock(self.engine, self.url, name, shared=shared, wait_s=wait_s)

    def close(self) -> None:
        """Close pooled connections (also done at exit); the catalog can still be used afterwards."""
        self.engine.dispose()

    # -- jobs ------------------------------------------------------------------------------------
    def start_job(self, kind: str, repo_id: str) -> str:
        job_id = uuid.uuid4().hex
        with self.session() as s, s.begin():
            s.add(JobRow(id=job_id, kind=kind, repo_id=repo_id, started=_now(), status="running"))
        return job_id

    def finish_job(self, job_id: str, status: str, message: str = "", backup_id: str | None = None,
                   report: dict | None = None) -> None:
        with self.session() as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is None:
                return
            row.finished, row.status, row.message = _now(), status, message[:2000]
            row.backup_id, row.report = backup_id, report or {}

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
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
