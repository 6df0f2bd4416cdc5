"""When a policy is due, and which level its run takes: pure functions of explicit clock values.

A policy is due at the newest slot of its cron schedule that has passed since its last run: slots
missed while no server ran collapse into that one run (a catch-up once, never a burst of one run per
missed slot). Cron expressions are read in the time zone of the datetimes given (the server passes
local time, as cron does).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from croniter import croniter

from ..config import WEEKDAYS, Policy
from ..domain import BackupLevel


def next_slot(schedule: str, after: datetime) -> datetime:
    """The first slot of `schedule` strictly after `after`."""
    return croniter(schedule, after).get_next(datetime)


def due_slot(schedule: str, last_slot: datetime | None, since: datetime, now: datetime) -> datetime | None:
    """The slot to run now, or None when nothing is due.

    `last_slot` is the slot of the policy's last run; without one (a new policy), slots count from
    `since` (when the server first saw the policy), so installing a server does not start every policy
    at once. When several slots have passed, the newest is returned: one catch-up run.
    """
    base = last_slot if last_slot is not None else since
    if next_slot(schedule, base) > now:
        return None
    newest = croniter(schedule, now).get_prev(datetime)
    following = next_slot(schedule, newest)  # get_prev is strictly before `now`: `now` itself may be a slot
    return following if following <= now else newest


def plan_level(policy: Policy, slot: datetime, last_full: datetime | None) -> BackupLevel:
    """The level of the run at `slot`: a Full when the policy has none yet, on its first run of a
    `full_on` day, or when its last Full is `full_every_days` old; its `level` otherwise."""
    if policy.builtin or last_full is None:
        return BackupLevel.FULL
    if WEEKDAYS[slot.weekday()] in policy.full_on and last_full.date() < slot.date():
        return BackupLevel.FULL
    if policy.full_every_days and slot - last_full >= timedelta(days=policy.full_every_days):
        return BackupLevel.FULL
    return BackupLevel(policy.level)


def verify_part(run_number: int, percent: float) -> tuple[int, int]:
    """The share of chunks the `run_number`-th run (from 0) deep-verifies: (part, parts) with
    parts = ceil(100 / percent), so that `parts` consecutive runs read every chunk once."""
    parts = max(1, -int(-100 // percent))
    return run_number % parts, parts
