"""The directories `mount` shows: a server's name is its tenant's to choose, its id is not.

`layout` is fed backup records as the repository holds them (the dev cloud is not needed to make
two projects' servers share a name)."""

from __future__ import annotations

from stackvault.engine.manifest import BackupRecord, DiskRecord
from stackvault.jobs.backup_mount import layout


def _record(backup_id: str, kind: str, name: str, uid: str, disks: tuple[str, ...] = ("vda",)) -> BackupRecord:
    return BackupRecord(
        backup_id=backup_id, created="2026-12-07T10:00:00+00:00", finished="2026-12-07T10:01:00+00:00",
        level="full", requested_level="full", status="ok",
        disks=[DiskRecord(position=n, name=d, disk_key=d, size=1 << 20, block_size=65536, level="full",
                          index=f"i{n}", index_checksum="", full_backup_id=backup_id) for n, d in enumerate(disks)],
        source={"kind": kind, kind: {"id": uid, "name": name}})


def test_servers_of_the_same_name_keep_their_own_directories() -> None:
    victim = _record("20261207T0100Z-aaaaaa", "server", "db", "11111111-2222-3333-4444-555555555555")
    attacker = _record("20261207T0200Z-bbbbbb", "server", "db", "99999999-8888-7777-6666-555555555555")
    tree = layout([victim, attacker])
    assert tree.keys() == {"db--11111111", "db--99999999"}
    assert max(tree["db--11111111"]) == victim.backup_id, "latest of the victim's server is the victim's backup"


def test_dot_names_and_slashes_stay_one_component() -> None:
    tree = layout([_record("20261207T0100Z-a", "volume", "..", ""), _record("20261207T0200Z-b", "volume", ".", ""),
                   _record("20261207T0300Z-c", "server", "a/b", "abcdef0123")])
    assert tree.keys() == {"_..", "_.", "a_b--abcdef01"}


def test_disks_whose_image_names_collide_are_left_out() -> None:
    tree = layout([_record("20261207T0100Z-a", "server", "web", "abcdef0123", disks=("vda", "vda.raw", "vdb"))])
    assert list(tree["web--abcdef01"]["20261207T0100Z-a"]) == ["vdb.raw"]
