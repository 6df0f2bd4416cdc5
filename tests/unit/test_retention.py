from datetime import UTC, datetime, timedelta

from stackvault.config import Retention
from stackvault.engine.manifest import BackupRecord
from stackvault.jobs.prune import choose_kept


def records(days: int) -> list[BackupRecord]:
    start = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
    out = []
    for d in range(days):
        for hour in (1, 13):  # two backups a day
            t = start + timedelta(days=d, hours=hour)
            out.append(BackupRecord(backup_id=f"{t:%Y%m%dT%H%M%SZ}-000000", created=t.isoformat(), finished="",
                                    level="incremental", requested_level="incremental", status="success", disks=[]))
    return out


def test_keep_last_keeps_the_newest():
    rs = records(3)
    assert choose_kept(rs, Retention(keep_last=2)) == {rs[-1].backup_id, rs[-2].backup_id}


def test_keep_daily_keeps_the_newest_of_each_day():
    rs = records(10)
    kept = choose_kept(rs, Retention(keep_daily=3))
    assert kept == {rs[-1].backup_id, rs[-3].backup_id, rs[-5].backup_id}


def test_rules_combine():
    rs = records(30)
    kept = choose_kept(rs, Retention(keep_last=1, keep_weekly=2, keep_monthly=2))
    assert rs[-1].backup_id in kept and len(kept) <= 5
