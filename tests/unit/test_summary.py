"""The daily summary names every server that went without a backup, the longest-waiting first."""

from __future__ import annotations

from stackvault.catalog.models import BackupRow
from stackvault.observe.summary import summary

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0


def _backup(server: str, finished: str) -> BackupRow:
    return BackupRow(backup_id=f"b-{server}", repo_id="r", created=finished, finished=finished, level="full",
                     requested_level="full", status="success", name=server, host="p",
                     source={"kind": "server", "server": {"id": f"id-{server}", "name": server}}, tags={},
                     size=1, bytes_read=1, bytes_stored=1, duration_s=1.0, disks=[])


def test_two_servers_without_a_recent_backup_are_both_listed_oldest_first() -> None:
    rows = [_backup("web", "2027-01-12T08:00:00+00:00"), _backup("db", "2027-01-10T08:00:00+00:00"),
            _backup("fresh", "2027-01-15T07:00:00+00:00")]
    _title, body = summary(rows, [], DAY, now=NOW)
    lines = body.splitlines()
    stale = lines[lines.index("Not backed up in the last 24 h:") + 1:]
    assert [line.split(" (")[0] for line in stale] == ["- server db", "- server web"], body
