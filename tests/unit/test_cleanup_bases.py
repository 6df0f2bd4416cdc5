"""`stackvault cleanup --bases` without a cloud: which retained base snapshots it releases, and that a
volume or repository no base belongs to is said, not silently passed over."""

from types import SimpleNamespace

import pytest
from openstack import exceptions as os_exc

from stackvault.cloud.rbd import BASE_KEY
from stackvault.errors import UsageError
from stackvault.jobs.cleanup import cleanup


class Cinder:
    def __init__(self) -> None:
        self.vols = [SimpleNamespace(id="v1", name="data", metadata={}, status="available"),
                     SimpleNamespace(id="v2", name="logs", metadata={}, status="available")]
        self.snaps = {sid: SimpleNamespace(id=sid, name=sid, volume_id=vid, metadata={BASE_KEY: repo}, size=1,
                                           created_at="now", status="available")
                      for sid, vid, repo in (("s1", "v1", "mine"), ("s2", "v2", "mine"), ("s3", "v1", "old"))}

    def volumes(self, details=True):
        return self.vols

    def snapshots(self, details=True, **query):
        return [s for s in self.snaps.values() if query.get("volume_id") in (None, s.volume_id)]

    def delete_snapshot(self, snapshot_id, ignore_missing=True):
        self.snaps.pop(snapshot_id, None)

    def get_snapshot(self, snapshot_id):
        if snapshot_id not in self.snaps:
            raise os_exc.NotFoundException(snapshot_id)
        return self.snaps[snapshot_id]


@pytest.fixture
def conn():
    return SimpleNamespace(block_storage=Cinder(), image=SimpleNamespace(images=lambda: []))


def test_bases_of_one_repository_are_released_and_the_others_kept(conn):
    result = cleanup(conn, release=True, repository="old")
    assert [b["id"] for b in result["bases_released"]] == ["s3"] and sorted(conn.block_storage.snaps) == ["s1", "s2"]
    result = cleanup(conn, release=True, volumes=["data"], repository="mine")
    assert [b["id"] for b in result["bases_released"]] == ["s1"] and sorted(conn.block_storage.snaps) == ["s2"]


def test_a_volume_or_repository_no_base_belongs_to_is_a_usage_error_and_releases_nothing(conn):
    with pytest.raises(UsageError) as err:
        cleanup(conn, release=True, volumes=["data", "dtaa"])
    assert str(err.value).startswith("no retained base snapshot is of volume dtaa")
    with pytest.raises(UsageError) as err:
        cleanup(conn, release=True, repository="typo")
    assert "no retained base snapshot belongs to repository typo" in str(err.value)
    assert "mine, old" in str(err.value)
    assert sorted(conn.block_storage.snaps) == ["s1", "s2", "s3"]


def test_the_doctor_flags_another_repositorys_bases_and_a_snapshot_quota_without_room(conn):
    from stackvault.jobs.doctor import retained_bases

    limits = SimpleNamespace(max_total_snapshots=4, total_snapshots_used=3)
    conn.block_storage.get_limits = lambda: SimpleNamespace(absolute=limits)
    report = retained_bases(conn, "mine", parallel=2)
    assert report["count"] == 3 and report["snapshot_quota"] == {"used": 3, "max": 4}
    other, quota = report["flags"]
    assert other.startswith("1 base snapshots are kept for repository old, not this proxy's repository mine")
    assert "`stackvault cleanup --bases --repository old`" in other
    assert quota.startswith("Cinder's snapshot quota leaves room for 1 more snapshots (3 of 4 used, 3 of them "
                            "retained bases) but a backup run takes up to 2 at once")
    limits.max_total_snapshots = 10
    (flag,) = retained_bases(conn, "old", parallel=2)["flags"]  # room enough: only the other repository's
    assert flag.startswith("2 base snapshots are kept for repository mine, not this proxy's repository old")
