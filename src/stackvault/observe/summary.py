"""The daily summary: what the catalog recorded in a period, and what has gone without a backup."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from ..catalog.models import BackupRow, JobRow
from ..engine.repository import hostname
from ..progress import human_bytes
from .metrics import FAILED, SUCCEEDED, target_of, timestamp
from .targets import Target


def summary(backups: list[BackupRow], jobs: list[JobRow], period_s: float, now: float | None = None) -> tuple[str, str]:
    """(title, body) of the summary of the `period_s` seconds before `now`."""
    now = time.time() if now is None else now
    since = now - period_s
    ended = [j for j in jobs if j.status != "running" and (timestamp(j.finished) or 0) >= since]
    failed = [j for j in ended if j.status in FAILED]
    warned = [j for j in ended if j.status == "warning"]
    new = [b for b in backups if (timestamp(b.finished) or 0) >= since]
    latest: dict[Target, float] = {}
    for b in backups:
        if b.status in SUCCEEDED:
            what = target_of(b)
            latest[what] = max(latest.get(what, 0.0), timestamp(b.finished) or 0.0)
    stale = sorted(((t, when) for t, when in latest.items() if when < since),  # longest without a backup first
                   key=lambda tw: (tw[1], tw[0].kind, tw[0].name, tw[0].id))
    hours = f"{period_s / 3600:g} h"
    title = (f"stackvault on {hostname()}: {len(failed)} failed, {len(warned)} with warnings, "
             f"{len(ended) - len(failed) - len(warned)} succeeded in {hours}")
    lines = [f"Jobs that ended in the last {hours} (since {_iso(since)}): {len(ended)}"]
    for heading, rows in (("Failed", failed), ("With warnings", warned)):
        if rows:
            lines.append(f"{heading}:")
            lines += [f"- job {j.id}: {j.kind}{_of(j)}, {j.status} at {j.finished}: {j.message or 'no message'}"
                      for j in sorted(rows, key=lambda j: j.finished or "")]
    lines.append(f"New backups: {len(new)}, {human_bytes(sum(b.bytes_read for b in new))} read, "
                 f"{human_bytes(sum(b.bytes_stored for b in new))} stored")
    if stale:
        lines.append(f"Not backed up in the last {hours}:")
        lines += [f"- {t.kind} {t.name} ({t.id}): last backup {_iso(when)}" for t, when in stale]
    return title, "\n".join(lines)


def _of(job: JobRow) -> str:
    named = (job.report or {}).get("target")
    return f" of {named.get('kind')} {named.get('name')}" if isinstance(named, dict) else ""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
