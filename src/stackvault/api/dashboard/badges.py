"""What the dashboard shows of a backup's consistency, and the summaries of its overview."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from ...domain import Consistency
from ...jobs.quiesce_proof import VERIFIED


class Badge(StrEnum):
    """The four kinds of consistency a person tells apart (docs/consistency.md): the guest's freeze
    proven by the marker read back from the backup, a freeze Nova claimed, no word, no freeze."""

    VERIFIED = "application (verified)"
    CLAIMED = "application (claimed)"
    UNKNOWN = "unknown"
    CRASH = "crash"

    @classmethod
    def of(cls, consistency: str | None) -> Badge:
        if consistency == VERIFIED:
            return cls.VERIFIED
        if consistency == Consistency.APPLICATION:
            return cls.CLAIMED
        if consistency == Consistency.CRASH:
            return cls.CRASH
        return cls.UNKNOWN

    @property
    def css(self) -> str:
        return {"application (verified)": "ok", "application (claimed)": "info", "unknown": "muted",
                "crash": "warn"}[self.value]


#: What "last night's run" covers: the jobs that started in this window before now.
LAST_RUN = timedelta(hours=24)


@dataclass
class LastRun:
    jobs: list  # JobEntry, newest first
    by_status: Counter
    failures: list  # (JobEntry, what, fix)


def last_run(entries: list, now: datetime | None = None) -> LastRun:
    """The jobs of the last 24 hours (oldest-first `entries`), their statuses and their failures."""
    since = (now or datetime.now(UTC)) - LAST_RUN
    recent = [e for e in reversed(entries) if _when(e.started) >= since]
    failures = []
    for entry in recent:
        error = entry.error()
        if error is not None:
            failures.append((entry, error[0], error[1]))
    return LastRun(recent, Counter(e.status for e in recent), failures)


def fleet_consistency(servers: list[dict]) -> list[tuple[str, str, int]]:
    """(label, css class, count) of the servers' newest backups, strongest first; servers without a
    backup are counted apart."""
    counts = Counter(Badge.of(s["last_backup"]["consistency"]) for s in servers if s["last_backup"])
    rows = [(badge.value, badge.css, counts[badge]) for badge in Badge]
    rows.append(("no backup", "bad", sum(1 for s in servers if not s["last_backup"])))
    return rows


def _when(iso: str) -> datetime:
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
