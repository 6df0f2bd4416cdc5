"""Backup records as the engine writes them, for catalog tests (the catalog stores what these say)."""

from __future__ import annotations

from stackvault.engine.manifest import BackupRecord, DiskRecord

TIB = 1 << 40


def record(backup_id: str, created: str, disks: int = 1, disk_keys: tuple[str, ...] = (), level: str = "full",
           size: int = 5 * TIB) -> BackupRecord:
    """A finished backup of `disks` disks; sizes past 2**32 check that byte counts are 64-bit columns."""
    keys = disk_keys or tuple(f"disk-{backup_id}-{i}" for i in range(disks))
    return BackupRecord(
        backup_id=backup_id, created=created, finished=created, level=level, requested_level=level,
        status="success", name=f"nightly {backup_id}", host="proxy-a",
        tags={"az": "nova", "n": 1}, source={"server": {"id": "srv-1", "name": "web"}}, duration_s=1.5,
        disks=[DiskRecord(position=i, name=f"vd{'abcdefgh'[i]}", disk_key=key, size=size, block_size=512 * 1024,
                          level=level, index=f"idx/{backup_id}/{i}", index_checksum="0" * 64,
                          full_backup_id=backup_id, bytes_read=size // 2, bytes_stored=size // 4,
                          blocks_total=size // (512 * 1024), blocks_changed=7)
               for i, key in enumerate(keys)],
    )
