"""What every job opens: the repository, its catalog and the working state, from the settings."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from ..config import Settings
from ..engine import keys
from ..engine.locks import RepositoryLock
from ..engine.repository import Repository
from ..engine.state import WorkingState
from ..storage import open_backend

if TYPE_CHECKING:
    from ..catalog import Catalog


class JobContext:
    def __init__(self, settings: Settings, passphrase_file: str | None = None) -> None:
        self.settings = settings
        self.passphrase_file = passphrase_file

    @cached_property
    def backend(self):  # noqa: ANN201 - a storage.Backend
        return open_backend(self.settings.require_repo(), sync=self.settings.sync, cloud=self.settings.cloud.os_cloud)

    @cached_property
    def repo(self) -> Repository:
        # The passphrase is looked for only when the repository turns out to be encrypted.
        return Repository.open(self.backend, passphrase=self.passphrase)

    def passphrase(self) -> str:
        """An encrypted repository's passphrase: --passphrase-file, STACKVAULT_PASSPHRASE, or a prompt."""
        return keys.passphrase(self.backend.location, self.passphrase_file)

    @cached_property
    def catalog(self) -> Catalog:
        # Imported here: SQLAlchemy costs a third of a second that commands without a catalog skip.
        from ..catalog import Catalog

        return Catalog(self.settings.catalog_url)

    @cached_property
    def state(self) -> WorkingState:
        return WorkingState(self.settings.workdir, self.repo)

    def lock(self, kind: str, job: str) -> RepositoryLock:
        return RepositoryLock(self.repo, kind, job, wait_s=self.settings.lock_wait)
