"""The retained base snapshots of `backup --volume` over a run of backups, without a cloud: a small fake
Cinder (snapshots, their metadata, the snapshot quota) and a fake repository of committed backups. The
engine is left out: each backup "reads" the snapshot it is given and commits a record naming it, as
the RBD path does."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import pytest
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from stackvault.cloud.rbd import BASE_KEY, REFUSED_KEY
from stackvault.config import Settings
from stackvault.engine.rbdsource import RbdSource
from stackvault.engine.sources import RawSource
from stackvault.errors import NotFoundError
from stackvault.jobs import cloud_backup
from stackvault.jobs.cloud_backup import DiskReaders, back_up_volume

REPO = "repo-1"


class FakeCinder:
    """What back_up_volume asks of Cinder's API, kept in a dict of snapshots."""

    def __init__(self, max_snapshots: int = -1) -> None:
        self.snaps: dict[str, SimpleNamespace] = {}
        self.max_snapshots = max_snapshots
        self.ids = (f"s{i}" for i in itertools.count(1))
        self.cloned_from: set[str] = set()  # Cinder refuses to delete these (back to `available`)
        self.list_calls = 0
        self.delete_calls: list[str] = []
        self.broken_metadata = False

    def get_limits(self):
        return SimpleNamespace(absolute=SimpleNamespace(max_total_snapshots=self.max_snapshots,
                                                        total_snapshots_used=len(self.snaps)))

    def create_snapshot(self, *, volume_id, force, name, metadata):
        if 0 <= self.max_snapshots <= len(self.snaps):
            raise os_exc.HttpException("SnapshotLimitExceeded: Maximum number of snapshots allowed exceeded")
        snap = SimpleNamespace(id=next(self.ids), name=name, volume_id=volume_id, metadata=dict(metadata), size=1,
                               created_at="now", status="available")
        self.snaps[snap.id] = snap
        return snap

    def get_snapshot(self, snapshot_id):
        if snapshot_id not in self.snaps:
            raise os_exc.NotFoundException(f"snapshot {snapshot_id}")
        return self.snaps[snapshot_id]

    def delete_snapshot(self, snapshot_id, ignore_missing=True):
        self.delete_calls.append(snapshot_id)
        if snapshot_id not in self.cloned_from:
            self.snaps.pop(snapshot_id, None)

    def wait_for_delete(self, res, wait):
        return res

    def set_snapshot_metadata(self, snapshot_id, **meta):
        if self.broken_metadata:
            raise ks_exc.ConnectFailure("Unable to establish connection to http://cinder:8776")
        self.snaps[snapshot_id].metadata.update(meta)

    def delete_snapshot_metadata(self, snapshot_id, keys):
        for key in keys:
            self.snaps[snapshot_id].metadata.pop(key, None)

    def snapshots(self, details=True, **query):
        self.list_calls += 1
        return [s for s in self.snaps.values() if query.get("volume_id") in (None, s.volume_id)]

    def base_ids(self) -> list[str]:
        return sorted(s.id for s in self.snaps.values() if s.metadata.get(BASE_KEY) == REPO)


class FakeRepo:
    """Committed backups, oldest first, each with the volume's one disk."""

    id = REPO

    def __init__(self) -> None:
        self.records: dict[str, SimpleNamespace] = {}

    def commit(self, level: str, snapshot_id: str | None) -> None:
        meta = {"rbd": {"snapshot": f"snapshot-{snapshot_id}"}} if snapshot_id else {}
        backup_id = f"b{len(self.records):04d}"
        disk = SimpleNamespace(disk_key="volume:v1", level=level, meta=meta)
        self.records[backup_id] = SimpleNamespace(backup_id=backup_id, disks=[disk], status="success")

    def backup_ids(self) -> list[str]:
        return sorted(self.records)

    def get_backup(self, backup_id):
        if backup_id not in self.records:
            raise NotFoundError(f"no backup {backup_id}", "")
        return self.records[backup_id]


class Run:
    """One proxy backing up volume v1 again and again; `rbd` says whether it reads from Ceph."""

    def __init__(self, monkeypatch, tmp_path, cinder: FakeCinder) -> None:
        self.cinder, self.repo = cinder, FakeRepo()
        self.rbd = True
        self.after_commit = lambda: None  # what another job does between our commit and our base handling
        settings = Settings(workdir=tmp_path)
        settings.ceph.volume_backends = {"ceph": "volumes"}
        self.ctx = SimpleNamespace(settings=settings, repo=self.repo)
        self.conn = SimpleNamespace(block_storage=cinder)
        self.volume = SimpleNamespace(id="v1", name="data", project_id="p1", size=1, volume_type="ceph",
                                      availability_zone="nova", is_bootable=False, metadata={},
                                      volume_image_metadata={})
        read: dict[str, str | None] = {}

        def from_volume(readers, volume, snapshot_id, *, name, key, meta):
            read["snapshot"] = snapshot_id if self.rbd else None
            if self.rbd:
                return RbdSource.__new__(RbdSource)
            return RawSource(path="/dev/null", name=name, key=key, meta=meta)

        def back_up(ctx, request, progress):
            self.repo.commit(self.level, read["snapshot"])
            self.after_commit()
            return SimpleNamespace(status="success")

        monkeypatch.setattr(DiskReaders, "from_volume", from_volume)
        monkeypatch.setattr(cloud_backup, "back_up", back_up)
        monkeypatch.setattr(cloud_backup, "backup_report", lambda record: {"status": record.status})

    def __call__(self, level: str = "incremental") -> dict:
        self.level = level
        self.cinder.list_calls = 0
        self.cinder.delete_calls = []
        result = back_up_volume(self.ctx, self.conn, self.volume, level, "job0000000", None)
        assert result.error is None, result.error
        return result.to_dict()


@pytest.fixture
def run(monkeypatch, tmp_path):
    return lambda cinder=None: Run(monkeypatch, tmp_path, cinder or FakeCinder())


def test_each_backup_keeps_its_snapshot_and_releases_the_one_before(run):
    backup = run()
    first = backup("full")
    assert backup.cinder.base_ids() == [first["base_snapshot"]] and first["status"] == "success"
    second = backup()
    assert backup.cinder.base_ids() == [second["base_snapshot"]]
    assert second["released_bases"] == [first["base_snapshot"]]


def test_a_full_snapshot_quota_releases_the_volumes_base_and_the_backup_reads_in_full(run):
    """Cinder's default quota is 10 snapshots for 10 volumes: with a base each, the next run has no room
    for its own snapshot. Releasing the base makes room; failing would lose the backup."""
    backup = run(FakeCinder(max_snapshots=2))
    backup("full")
    backup.cinder.create_snapshot(volume_id="other", force=True, name="users", metadata={})  # the quota is full
    second = backup()
    assert second["status"] == "warning"
    assert "snapshot quota was full (2 of 2 snapshots): released the base snapshot s1" in second["warnings"][0]
    assert "reads the volume in full" in second["warnings"][0]
    assert backup.cinder.base_ids() == [second["base_snapshot"]]


def test_bases_are_released_when_the_volume_no_longer_takes_the_rbd_path(run):
    backup = run()
    backup("full")
    backup.rbd = False
    backup.ctx.settings.ceph.volume_backends = {}  # [ceph] volume_backends removed from the config
    plain = backup()
    assert backup.cinder.base_ids() == [] and plain["released_bases"] == ["s1"]
    assert "base_snapshot" not in plain
    assert backup.cinder.list_calls == 1  # one filtered list of the volume's snapshots


def test_a_base_cinder_refuses_to_delete_is_reported_once_and_costs_no_long_wait(run):
    backup = run()
    backup("full")
    backup.cinder.cloned_from.add("s1")  # a user made a volume from the base snapshot
    started = time.monotonic()
    second = backup()
    assert time.monotonic() - started < 5
    assert second["status"] == "warning"
    assert "Cinder refused to delete the superseded base snapshot s1" in second["warnings"][0]
    assert backup.cinder.snaps["s1"].metadata[REFUSED_KEY]
    assert backup.cinder.delete_calls == ["s1"]  # tried once, not four times
    third = backup()
    assert third["status"] == "success" and third["refused_bases"] == ["s1"]
    backup.cinder.cloned_from.clear()  # the clone was deleted: the next backup releases it
    fourth = backup()
    assert "s1" in fourth["released_bases"] and "s1" not in backup.cinder.snaps


def test_a_base_named_by_a_newer_backup_of_another_job_is_kept(run):
    """Two proxies (or jobs) backing up one volume into one repository: the base the newest committed
    backup read is the one the next Incremental diffs from, whichever job made it."""
    backup = run()
    backup("full")
    theirs = backup.cinder.create_snapshot(volume_id="v1", force=True, name="theirs", metadata={BASE_KEY: REPO})

    def other_job_commits():
        backup.repo.commit("incremental", theirs.id)

    backup.after_commit = other_job_commits
    mine = backup()
    assert theirs.id in backup.cinder.base_ids()
    assert mine["base_snapshot"] in backup.cinder.base_ids()  # ours too, until a later backup supersedes it
    backup.after_commit = lambda: None
    later = backup()
    assert backup.cinder.base_ids() == [later["base_snapshot"]]


def test_differentials_keep_the_last_fulls_snapshot_beside_the_newest(run):
    backup = run()
    full = backup("full")["base_snapshot"]
    d1 = backup("differential")["base_snapshot"]
    assert backup.cinder.base_ids() == sorted([full, d1])
    d2 = backup("differential")["base_snapshot"]
    assert backup.cinder.base_ids() == sorted([full, d2])  # at most two per volume
    i1 = backup("incremental")["base_snapshot"]
    assert backup.cinder.base_ids() == sorted([full, i1])  # a Differential may still follow
    full2 = backup("full")["base_snapshot"]
    i2 = backup("incremental")["base_snapshot"]
    assert backup.cinder.base_ids() == [i2] and full2 not in backup.cinder.base_ids()


def test_a_connection_error_after_the_commit_is_a_warning_never_a_failure(run):
    backup = run()
    backup("full")
    backup.cinder.broken_metadata = True
    second = backup()
    assert second["status"] == "warning" and "error" not in second
    assert "cannot tag Cinder snapshot" in " ".join(second["warnings"])
    # the new snapshot is deleted as a temporary one, and the old base too: the committed backup
    # supersedes it, so the next backup reads in full either way
    assert backup.cinder.snaps == {}
