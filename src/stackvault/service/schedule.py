"""When a policy is due, and which level its run takes: pure functions of explicit clock values.

A policy is due at the newest slot of its cron schedule that has passed since its last run: slots
missed while no server ran collapse into that one run (a catch-up once, never a burst of one run per
missed slot). Cron expressions are read in a named time zone with its summer-time rules (the policy's
`timezone`, else the machine's, as cron reads its table): a slot computed in a fixed UTC offset, as a
stored slot's is, would move by an hour at each change and queue an extra run or skip one.

Across a change a time of day is a slot once a day: one skipped by the spring change (02:30 in
Europe/Berlin) comes at the first minute after the gap, and one repeated by the autumn change comes
only the first time (croniter alone gives it twice).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..config import WEEKDAYS, Policy
from ..domain import BackupLevel

log = logging.getLogger(__name__)

#: Where the machine's zone is read from when $TZ names none (systemd's timedatectl writes it).
LOCALTIME = "/etc/localtime"


def policy_zone(policy: Policy) -> tzinfo:
    """The zone the policy's schedules are read in: its `timezone`, else the machine's."""
    return ZoneInfo(policy.timezone) if policy.timezone else machine_zone()


def machine_zone() -> tzinfo:
    """This machine's zone with its summer-time rules, as cron uses it: $TZ when it names a zone (`Europe/Berlin`,
    or a zone file's path, `:/etc/localtime` as systemd units write it), else /etc/localtime; UTC only when
    neither can be read (a container without zone data), with a warning, since every slot then moves."""
    name = os.environ.get("TZ", "").lstrip(":")
    for read in (_zone_named(name) if name else None, _zone_file(LOCALTIME)):
        if read is not None:
            return read
    log.warning("no time zone in $TZ (%r) nor in %s: schedules are read in UTC (set the policy's timezone)",
                os.environ.get("TZ", ""), LOCALTIME)
    return UTC


def _zone_named(name: str) -> tzinfo | None:
    """The zone $TZ names: an IANA name or a zone file's path; None for anything else (a POSIX rule
    string such as `CET-1CEST,M3.5.0,M10.5.0/3` is not read: /etc/localtime is, instead)."""
    if name.startswith("/"):
        return _zone_file(name)
    try:
        return ZoneInfo(name)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return None


def _zone_file(path: str) -> tzinfo | None:
    try:
        with open(path, "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return None


def _repeated(slot: datetime) -> bool:
    """A wall-clock time the autumn change brings a second time (its first pass was a slot too)."""
    return slot.fold == 1 and slot.replace(fold=0).utcoffset() != slot.utcoffset()


def next_slot(schedule: str, after: datetime, tz: tzinfo | None = None) -> datetime:
    """The first slot of `schedule` strictly after `after`, read in `tz` (default: `after`'s zone)."""
    found = croniter(schedule, after.astimezone(tz or after.tzinfo))
    while _repeated(slot := found.get_next(datetime)):
        pass
    return slot


def due_slot(schedule: str, last_slot: datetime | None, since: datetime, now: datetime,
             tz: tzinfo | None = None) -> datetime | None:
    """The slot to run now, or None when nothing is due; the schedule is read in `tz` (default: `now`'s
    zone), whatever offsets `last_slot` and `since` carry.

    `last_slot` is the slot of the policy's last run; without one (a new policy), slots count from
    `since` (when the server first saw the policy), so installing a server does not start every policy
    at once. When several slots have passed, the newest is returned: one catch-up run.
    """
    now = now.astimezone(tz or now.tzinfo)
    base = last_slot if last_slot is not None else since
    if next_slot(schedule, base, now.tzinfo) > now:
        return None
    before = croniter(schedule, now)
    while _repeated(newest := before.get_prev(datetime)):
        pass
    following = next_slot(schedule, newest)  # get_prev is strictly before `now`: `now` itself may be a slot
    return following if following <= now else newest


def plan_level(policy: Policy, slot: datetime, last_full: datetime | None) -> BackupLevel:
    """The level of the run at `slot`: a Full when the policy has none yet, on its first run of a
    `full_on` day, or when its last Full is `full_every_days` old; its `level` otherwise."""
    if policy.builtin or last_full is None:
        return BackupLevel.FULL
    if WEEKDAYS[slot.weekday()] in policy.full_on and last_full.astimezone(slot.tzinfo).date() < slot.date():
        return BackupLevel.FULL
    if policy.full_every_days and slot - last_full >= timedelta(days=policy.full_every_days):
        return BackupLevel.FULL
    return BackupLevel(policy.level)


def verify_part(run_number: int, percent: float) -> tuple[int, int]:
    """The share of chunks the `run_number`-th run (from 0) deep-verifies: (part, parts) with
    parts = ceil(100 / percent), so that `parts` consecutive runs read every chunk once."""
    parts = max(1, -int(-100 // percent))
    return run_number % parts, parts
