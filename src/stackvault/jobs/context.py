"""What every job opens: the repository, its catalog and the working state, from the settings."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from ..config import Settings
from ..engine import keys
from ..engine.locks import RepositoryLock
from ..engine.packs import DEFAULT_PACK_SIZE
from ..engine.repository import DEFAULT_VERSION, Repository
from ..engine.state import WorkingState
from ..errors import CatalogError, warn
from ..storage import Backend, open_backend

if TYPE_CHECKING:
    from ..catalog import Catalog


class JobContext:
    def __init__(self, settings: Settings, passphrase_file: str | None = None, *, passphrase_env: str = keys.ENV,
                 passphrase_option: str = "--passphrase-file") -> None:  # noqa: S107 - an option's name
        self.settings = settings
        self.passphrase_file = passphrase_file
        #: Where an encrypted repository's passphrase comes from, by name (`copy` opens a second
        #: repository with a context of its own, its passphrase given under other names).
        self.passphrase_env = passphrase_env
        self.passphrase_option = passphrase_option

    @cached_property
    def _store(self) -> Backend:
        """The storage of the configured repository, opened once: only the repository reads and writes it."""
        return open_backend(self.settings.require_repo(), sync=self.settings.sync, cloud=self.settings.cloud.os_cloud)

    @property
    def location(self) -> str:
        """The configured repository's location as its storage names it (a local path made absolute)."""
        return self._store.location

    @cached_property
    def repo(self) -> Repository:
        # The passphrase is looked for only when the repository turns out to be encrypted.
        repo = self.open_repository(self.passphrase)
        from .trust import check  # the store is not trusted: compare with what this proxy remembers

        check(self, repo)
        return repo

    def open_repository(self, passphrase: Callable[[], str] | None = None) -> Repository:
        """The repository as the store holds it, unchecked against what this proxy remembers of it
        (`repo` is the checked one): for `trust accept`, and for reading a plain one's id without a
        passphrase. `passphrase` is asked for only when the repository is encrypted."""
        return Repository.open(self._store, passphrase=passphrase)

    def init_repository(self, block_size: int, compression_level: int, *,
                        passphrase: str | Callable[[], str] | None = None, version: int = DEFAULT_VERSION,
                        pack_size: int = DEFAULT_PACK_SIZE) -> Repository:
        """A new repository at the configured location (`Repository.init`)."""
        return Repository.init(self._store, block_size, compression_level, passphrase=passphrase, version=version,
                               pack_size=pack_size)

    def passphrase(self) -> str:
        """An encrypted repository's passphrase: --passphrase-file, STACKVAULT_PASSPHRASE, or a prompt."""
        return keys.passphrase(self.location, self.passphrase_file, self.passphrase_env, self.passphrase_option)

    @cached_property
    def catalog(self) -> Catalog:
        # Imported here: SQLAlchemy costs a third of a second that commands without a catalog skip.
        from ..catalog import Catalog

        return Catalog(self.settings.catalog_url)

    def start_reading_job(self, kind: str) -> str | None:
        """A catalog job row for a job that only reads the repository (restore), or None without one.

        Such a job needs nothing but the repository: a catalog that cannot be opened or written (damaged,
        unreachable) costs the job its history row and a warning, never the restore itself.
        """
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return self.catalog.start_job(kind, self.repo.id)
        except (CatalogError, SQLAlchemyError) as exc:  # SQLAlchemy's: a server lost between two queries
            warn(f"this {kind} is not recorded in the catalog: {_line(exc)}")
            return None

    def finish_reading_job(self, job_id: str | None, status: str, message: str = "", **done: object) -> None:
        """The end of a `start_reading_job` row (nothing when there is none or the catalog fails now)."""
        if job_id is None:
            return
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self.catalog.finish_job(job_id, status, message, **done)  # type: ignore[arg-type]  # backup_id, report
        except (CatalogError, SQLAlchemyError) as exc:
            warn(f"the end of job {job_id} is not recorded in the catalog: {_line(exc)}")

    def set_damaged_catalog_aside(self) -> str | None:
        """Before a rebuild: a SQLite catalog file that SQLite finds damaged is renamed (kept) so a new
        one can be built in its place; returns the name it was kept under, or None if there was none."""
        from ..catalog.connect import damage, set_aside, sqlite_path

        path = sqlite_path(self.settings.catalog_url)
        if path is None or not os.path.isfile(path) or damage(path) is None:
            return None
        return set_aside(path)

    def open_catalog_early(self) -> None:
        """Open the catalog on a thread of its own while the job waits on something else.

        A cloud job spends seconds waiting for Nova's snapshot with the CPU idle; importing SQLAlchemy
        and checking the schema then is free, where later it competes with the engine. A failure is
        left for the job's own use of the catalog to report.
        """
        def open_quietly() -> None:
            try:
                self.catalog  # noqa: B018 - the cached property is the point
            except Exception:  # noqa: BLE001 - reported when the job itself opens it
                pass

        threading.Thread(target=open_quietly, name="sv-catalog-open", daemon=True).start()

    @cached_property
    def state(self) -> WorkingState:
        return WorkingState(self.settings.workdir, self.repo)

    def lock(self, kind: str, job: str) -> RepositoryLock:
        return RepositoryLock(self.repo, kind, job, wait_s=self.settings.lock_wait)

    @contextmanager
    def locked(self, kind: str, job: str) -> Iterator[None]:
        """The repository's lock, then the catalog's advisory lock on it, both of `kind`, each within --wait.

        The repository lock stays the guard of the data (it also covers proxies with other catalogs);
        the catalog lock adds PostgreSQL's strongly consistent locking, which an object store's
        listing of lock objects may lack. Every job takes them in this order, so none holds the
        catalog lock while it waits for the repository's: two waiting jobs cannot block each other.
        """
        with self.lock(kind, job):
            with self.catalog.repository_lock(self.repo.id, self.repo.location, shared=kind == "shared",
                                              wait_s=self.settings.lock_wait):
                yield

    @contextmanager
    def recorded(self, kind: str) -> Iterator[dict]:
        """A catalog job row around the block: running (under a lease) inside it, then `success` with the
        report the block put into the yielded dict, or `failed` with the error."""
        job_id = self.catalog.start_job(kind, self.repo.id)
        report: dict = {}
        try:
            yield report
        except BaseException as exc:
            self.catalog.finish_job(job_id, "failed", str(exc) or exc.__class__.__name__)
            raise
        self.catalog.finish_job(job_id, "success", report=report)


def _line(exc: BaseException) -> str:
    """An error as one line (SQLAlchemy's own add the statement and a link on further lines)."""
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
