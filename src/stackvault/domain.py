"""The words every face of stackvault shares: backup levels, job statuses, consistency.

They are `StrEnum`s so that a value is its own text: it compares equal to the string the catalog,
the repository format and `--json` output have always held (`BackupLevel.FULL == "full"`), so stored
data and JSON stay as they are while the CLI, the jobs and later the scheduler and the API name the
same closed set of values and a type checker catches a misspelled one.
"""

from __future__ import annotations

from enum import StrEnum

#: The tag a policy's backups carry, naming the policy: its retention forgets only those.
POLICY_TAG = "policy"


class BackupLevel(StrEnum):
    """How much of a disk a backup reads and stores (docs/repository-format.md)."""

    FULL = "full"
    INCREMENTAL = "incremental"
    DIFFERENTIAL = "differential"


class JobStatus(StrEnum):
    """How a job ended, as the catalog's job rows and every report say it.

    `partial`: some servers of a job failed and others did not; `running` and `interrupted` are only
    the catalog's (a job under way, or one whose holder stopped renewing its lease).
    """

    SUCCESS = "success"
    WARNING = "warning"
    PARTIAL = "partial"
    FAILED = "failed"
    RUNNING = "running"
    INTERRUPTED = "interrupted"

    @property
    def succeeded(self) -> bool:
        """Whether the job did what it was asked (perhaps with warnings): exit 0."""
        return self in (JobStatus.SUCCESS, JobStatus.WARNING)


class Consistency(StrEnum):
    """How consistent a server's backup is, strongest first (docs/consistency.md)."""

    APPLICATION = "application"
    UNKNOWN = "unknown"
    CRASH = "crash"
