"""Slots in a named time zone across both 2026 changes of Europe/Berlin (29 March, 02:00 -> 03:00;
25 October, 03:00 -> 02:00): a daily slot runs once each day, neither skipped nor doubled, for a
server polling every minute whose stored slots carry fixed offsets; and the zone a policy names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from stackvault.config import Policy, load_settings
from stackvault.errors import UsageError
from stackvault.service.schedule import due_slot, machine_zone, next_slot, policy_zone

BERLIN = ZoneInfo("Europe/Berlin")


def _serve(schedule: str, start: datetime, days: int, tz=BERLIN) -> list[datetime]:
    """The slots a server polling every five minutes from `start` for `days` runs, each stored and read back as
    the catalog keeps it (ISO text with its UTC offset) and compared with a clock in UTC."""
    runs: list[datetime] = []
    last: datetime | None = None
    now = start.astimezone(UTC)
    while now < start + timedelta(days=days):
        slot = due_slot(schedule, last, start, now, tz)
        if slot is not None:
            runs.append(slot)
            last = datetime.fromisoformat(slot.isoformat())
        now += timedelta(minutes=5)
    return runs


@pytest.mark.parametrize("schedule", ["30 2 * * *", "0 3 * * *", "0 1 * * *"])
def test_a_daily_slot_runs_once_a_day_across_the_spring_change(schedule: str) -> None:
    runs = _serve(schedule, datetime(2026, 3, 27, 12, tzinfo=BERLIN), 4)
    assert [r.astimezone(BERLIN).date().day for r in runs] == [28, 29, 30, 31], runs
    spring = next(r for r in runs if r.astimezone(BERLIN).day == 29).astimezone(BERLIN)
    assert (spring.hour, spring.minute) == ((3, 0) if schedule == "30 2 * * *" else (int(schedule.split()[1]), 0))


@pytest.mark.parametrize("schedule", ["30 2 * * *", "0 2 * * *", "0 3 * * *", "55 1 * * *"])
def test_a_daily_slot_runs_once_a_day_across_the_autumn_change(schedule: str) -> None:
    runs = _serve(schedule, datetime(2026, 10, 23, 12, tzinfo=BERLIN), 4)
    local = [r.astimezone(BERLIN) for r in runs]
    assert [r.day for r in local] == [24, 25, 26, 27], runs
    minute, hour = (int(f) for f in schedule.split()[:2])
    assert all((r.hour, r.minute) == (hour, minute) for r in local), local


def test_a_slot_stored_in_summer_time_does_not_queue_an_extra_run_after_the_autumn_change() -> None:
    stored = datetime.fromisoformat("2026-10-25T02:00:00+02:00")  # the 25th's run, before the change
    # 26 October, 01:00 winter time: read in the stored +02:00 it would be 02:00 and the 25th's slot due again.
    assert due_slot("0 2 * * *", stored, stored, datetime(2026, 10, 26, 0, 0, tzinfo=UTC), BERLIN) is None
    assert due_slot("0 2 * * *", stored, stored, datetime(2026, 10, 26, 1, 0, tzinfo=UTC), BERLIN) == \
        datetime(2026, 10, 26, 2, 0, tzinfo=BERLIN)


def test_an_hourly_schedule_keeps_its_hours_through_the_repeated_hour() -> None:
    slots = [datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN)]
    for _ in range(4):
        slots.append(next_slot("0 * * * *", slots[-1], BERLIN))
    assert [s.astimezone(BERLIN).strftime("%H:%M%z") for s in slots] == \
        ["00:00+0200", "01:00+0200", "02:00+0200", "03:00+0100", "04:00+0100"]


def test_the_policy_names_its_zone_or_takes_the_machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sv.toml"
    config.write_text('[policy.web]\nservers = ["web-1"]\ntimezone = "Europe/Berlin"\n'
                      '[policy.proxy-state]\ntimezone = "UTC"\n')
    policies = load_settings(str(config)).policies
    assert policy_zone(policies["web"]) == BERLIN and str(policy_zone(policies["proxy-state"])) == "UTC"
    monkeypatch.setenv("TZ", "America/New_York")
    assert policy_zone(Policy("x")) == machine_zone() == ZoneInfo("America/New_York")
    config.write_text('[policy.web]\nservers = ["web-1"]\ntimezone = "Berlin"\n')
    with pytest.raises(UsageError) as err:
        load_settings(str(config))
    assert err.value.message.startswith("bad value 'Berlin' for timezone of policy 'web'")
    assert "Europe/Berlin" in (err.value.fix or "")


def test_the_machines_zone_is_read_from_tz_as_systemd_and_containers_set_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`TZ=:/etc/localtime` (systemd units) and a zone file's path name the zone in that file; a TZ that
    names none falls back to /etc/localtime, and only a machine without either reads UTC."""
    from stackvault.service import schedule

    berlin_file = tmp_path / "localtime"
    berlin_file.write_bytes(Path("/usr/share/zoneinfo/Europe/Berlin").read_bytes())
    monkeypatch.setattr(schedule, "LOCALTIME", str(berlin_file))
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC)
    for tz in (f":{berlin_file}", str(berlin_file), "CET-1CEST,M3.5.0,M10.5.0/3", "Not/AZone", ""):
        monkeypatch.setenv("TZ", tz)
        assert machine_zone().utcoffset(summer) == BERLIN.utcoffset(summer), tz
    monkeypatch.setattr(schedule, "LOCALTIME", str(tmp_path / "missing"))
    monkeypatch.setenv("TZ", "")
    assert machine_zone() == UTC
