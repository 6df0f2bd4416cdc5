"""Errors a user can meet. Each names the thing that is wrong and how to fix it, in one line."""

from __future__ import annotations

import sys


class StackvaultError(Exception):
    """Base of every error stackvault reports to a user; `exit_code` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} ({fix})" if fix else message)


class UsageError(StackvaultError):
    """Bad command line, configuration or input: the user must change what they asked."""

    exit_code = 2


class SourceError(UsageError):
    """A disk source cannot be opened or read."""


class CatalogError(UsageError):
    """The catalog cannot be opened or read (damaged, or not where it should be).

    The catalog only summarises the repository, so commands that read the repository (restore,
    verify, list, show) go on without it; commands that must record their work in it stop.
    """


class RepositoryError(StackvaultError):
    """The repository is missing, of another format, locked, or damaged."""


class CorruptChunkError(RepositoryError):
    """A stored chunk does not decode or does not hash to its id: its data must not be used."""

    exit_code = 3

    def __init__(self, chunk_id: str, problem: str) -> None:
        self.chunk_id = chunk_id
        self.problem = problem
        super().__init__(
            f"chunk {chunk_id} is damaged: {problem}",
            "run `stackvault verify --deep` to list the affected backups and set the chunk aside; "
            "the next Full backup of a disk holding that block stores it again",
        )


class DamagedObjectError(RepositoryError):
    """A repository object (backup record, config) is damaged or was altered: it must not be used."""

    exit_code = 3


class DamagedRecordError(DamagedObjectError):
    """A backup record cannot be read or fails its check: that backup alone is unusable."""

    def __init__(self, backup_id: str, problem: str) -> None:
        self.backup_id = backup_id
        self.problem = problem
        super().__init__(f"backup record backups/{backup_id}.json is damaged: {problem}",
                         f"this backup cannot be used; remove it with `stackvault forget {backup_id}`")


class NotFoundError(UsageError):
    """A named backup, disk or object does not exist."""


class LockedError(RepositoryError):
    """Another job holds a lock that this one cannot share: nothing was done, try again later.

    Its own exit code, so that cron, systemd and a scheduler tell "busy, retry" from "the job failed":
    75 is sysexits' EX_TEMPFAIL, the code mail systems and job runners already read as "try again".
    """

    exit_code = 75


class ExtractionError(StackvaultError):
    """Writing a file extracted from a backup on this host failed: no space, no permission, a name
    this host's file system cannot hold. The partial extraction is removed."""


class GuestNameError(StackvaultError):
    """A file name inside a backed-up disk is not UTF-8, which libguestfs' Python binding cannot hand over."""


class StateError(StackvaultError):
    """A working-state file is missing, stale or corrupt (always recoverable from the repository)."""


def warn(message: str) -> None:
    """One `stackvault: warning:` line on stderr: something was skipped or is suspicious, the job goes on."""
    print(f"stackvault: warning: {message}", file=sys.stderr)
