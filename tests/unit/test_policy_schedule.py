"""When a policy is due and at which level, on explicit clock values; its config's one-line errors;
the keep rules that policies added to prune."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stackvault.config import PROXY_STATE_POLICY, Policy, Retention, load_settings
from stackvault.engine.manifest import BackupRecord
from stackvault.errors import UsageError
from stackvault.jobs.prune import choose_kept
from stackvault.service.schedule import due_slot, next_slot, plan_level, verify_part

T0 = datetime(2026, 12, 6, 23, 30, tzinfo=UTC)  # a Sunday evening


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def test_a_new_policy_waits_for_its_first_slot_after_the_server_saw_it() -> None:
    assert due_slot("0 * * * *", None, T0, at(minutes=29)) is None
    assert due_slot("0 * * * *", None, T0, at(minutes=30)) == at(minutes=30)


def test_nothing_is_due_between_slots() -> None:
    last = at(minutes=30)
    assert due_slot("0 * * * *", last, T0, at(minutes=30, seconds=1)) is None
    assert due_slot("0 * * * *", last, T0, at(minutes=89, seconds=59)) is None
    assert due_slot("0 * * * *", last, T0, at(minutes=90)) == at(minutes=90)


def test_slots_missed_while_down_are_caught_up_once_at_the_newest() -> None:
    last = at(minutes=30)  # 00:00 Monday; the server was down until 05:17
    now = at(hours=5, minutes=47)
    slot = due_slot("0 * * * *", last, T0, now)
    assert slot == at(hours=5, minutes=30)  # 05:00, not 01:00 followed by four more
    assert due_slot("0 * * * *", slot, T0, now) is None  # once it ran, nothing more is due until 06:00


def test_a_sixth_field_gives_seconds() -> None:
    assert due_slot("* * * * * */10", T0, T0, at(seconds=9)) is None
    assert due_slot("* * * * * */10", T0, T0, at(seconds=25)) == at(seconds=20)
    assert next_slot("* * * * * */10", at(seconds=20)) == at(seconds=30)


def test_cron_is_read_in_the_time_zone_given() -> None:
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    since = datetime(2026, 12, 7, 1, 0, tzinfo=paris)
    assert due_slot("0 2 * * *", None, since, datetime(2026, 12, 7, 2, 0, 5, tzinfo=paris)) == \
        datetime(2026, 12, 7, 2, 0, tzinfo=paris)


def test_level_plan_full_first_then_the_level_between_fulls() -> None:
    policy = Policy("web", level="differential")
    assert plan_level(policy, at(hours=1), None) == "full"
    assert plan_level(policy, at(hours=2), at(hours=1)) == "differential"


def test_level_plan_full_on_sundays_once_per_sunday() -> None:
    policy = Policy("web", full_on=["sun"])
    saturday, sunday = T0 - timedelta(days=1), T0 - timedelta(hours=20)
    assert plan_level(policy, saturday, saturday - timedelta(days=6)) == "incremental"
    assert plan_level(policy, sunday, saturday - timedelta(days=6)) == "full"
    assert plan_level(policy, T0, sunday) == "incremental"  # Sunday's second run: the Full is done
    assert plan_level(policy, at(hours=1), sunday) == "incremental"  # Monday


def test_level_plan_full_every_n_days() -> None:
    policy = Policy("web", full_every_days=3)
    assert plan_level(policy, at(days=2, hours=23), T0) == "incremental"
    assert plan_level(policy, at(days=3), T0) == "full"


def test_the_proxy_state_policy_is_always_a_full() -> None:
    assert plan_level(load_settings().policies[PROXY_STATE_POLICY], T0, T0) == "full"


def test_sampled_verify_reads_every_share_within_its_period() -> None:
    assert [verify_part(n, 25) for n in range(5)] == [(0, 4), (1, 4), (2, 4), (3, 4), (0, 4)]
    assert verify_part(7, 30) == (3, 4)  # 30 %: four runs read everything
    assert verify_part(0, 100) == (0, 1)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stackvault.toml"
    path.write_text(text)
    return path


def test_policies_load_with_their_defaults_and_the_built_in_one(tmp_path: Path) -> None:
    path = _config(tmp_path, '[policy.web]\nschedule = "*/5 * * * *"\nserver_tags = ["web"]\nfull_on = ["sun"]\n'
                             'retention = { keep_daily = 7, keep_within = "12h" }\nverify_sample_percent = 10\n')
    policies = load_settings(str(path)).policies
    web = policies["web"]
    assert (web.schedule, web.server_tags, web.full_on, web.level) == ("*/5 * * * *", ["web"], ["sun"], "incremental")
    assert web.retention == Retention(keep_daily=7, keep_within=12 * 3600)
    assert web.verify_sample_percent == 10 and web.gc
    assert policies[PROXY_STATE_POLICY].enabled  # on by default


@pytest.mark.parametrize(("line", "message"), [
    ('schedule = "every day"', "bad value 'every day' for schedule of policy 'x' in {path}: not a cron expression"),
    ('full_on = ["sunday"]', "full_on of policy 'x' in {path} names a day that is not one of mon, tue"),
    ("retention = { keep_dayly = 1 }", "unknown key 'keep_dayly' in retention of policy 'x' in {path}"),
    ('retention = { keep_within = "forever" }', "bad value 'forever' for keep_within of retention of policy"),
    ("retention = { keep_daily = -1 }", "bad value -1 for keep_daily of retention of policy 'x' in {path}"),
    ('level = "full"', "level of policy 'x' in {path} must be incremental or differential"),
    ("verify_sample_percent = 200", "bad value 200 for verify_sample_percent of policy 'x' in {path}"),
    ('require_consistency = "best"', "require_consistency of policy 'x' in {path} must be one of application"),
    ("sever_tags = []", "unknown key 'sever_tags' in policy 'x' in {path}"),
    ('all = "yes"', "all of policy 'x' in {path} must be true or false"),
])
def test_a_bad_policy_key_is_one_line_naming_it(tmp_path: Path, line: str, message: str) -> None:
    path = _config(tmp_path, f"[policy.x]\nserver_tags = [\"web\"]\n{line}\n")
    with pytest.raises(UsageError) as caught:
        load_settings(str(path))
    assert str(caught.value).startswith(message.format(path=path))
    assert "\n" not in str(caught.value)


def test_a_policy_selecting_nothing_and_a_built_in_key_the_built_in_lacks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"policy 'x' in .* selects nothing to back up"):
        load_settings(str(_config(tmp_path, '[policy.x]\nschedule = "0 1 * * *"\n')))
    with pytest.raises(UsageError, match=r"unknown key 'servers' in policy 'proxy-state' .*valid keys: enabled, "):
        load_settings(str(_config(tmp_path, '[policy.proxy-state]\nservers = ["a"]\n')))


def _record(created: datetime) -> BackupRecord:
    return BackupRecord(backup_id=created.strftime("%Y%m%dT%H%M%SZ"), created=created.isoformat(),
                        finished=created.isoformat(), level="full", requested_level="full", status="success",
                        disks=[])


def test_keep_hourly_yearly_and_within() -> None:
    records = [_record(T0 - timedelta(minutes=20 * n)) for n in range(12)]  # four hours, three per hour
    hourly = choose_kept(records, Retention(keep_hourly=2))
    assert hourly == {records[0].backup_id, records[2].backup_id}  # 23:30 and 22:50, the newest of their hours
    within = choose_kept(records, Retention(keep_within=3600))
    assert within == {r.backup_id for r in records[:4]}
    years = [_record(T0 - timedelta(days=200 * n)) for n in range(6)]
    assert choose_kept(years, Retention(keep_yearly=2)) == {years[0].backup_id, years[2].backup_id}
