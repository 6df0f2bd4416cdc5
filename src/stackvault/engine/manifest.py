"""Backup records: the JSON that commits a backup and describes it without any other source of truth.

`backups/<id>.json` is written last, after every chunk and every disk's block index is durable, so
its presence is the commit point. It carries everything needed to rebuild the catalog and the working
state (levels, sizes, the Full each disk is relative to, source metadata), and the paths of the
per-disk block indexes (`indexes/<id>/<n>.fidx`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

RECORD_FORMAT = "stackvault-backup"
RECORD_VERSION = 1


def new_backup_id(now: datetime | None = None, after: str | None = None) -> str:
    """Sortable by time (to the millisecond), unique without coordination between proxies.

    Ids order backups everywhere ("latest", the base of an Incremental, retention), so an id is never
    smaller than `after`, the newest id already in the repository: two backups in the same
    millisecond, or a clock that stepped back, still sort in the order they were made.
    """
    now = now or datetime.now(timezone.utc)
    stamp = f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z"
    if after is not None and stamp <= after.split("-", 1)[0]:
        stamp = after.split("-", 1)[0]  # same stamp: the suffix decides, so make it sort after
        return f"{stamp}-{_suffix_after(after.split('-', 1)[1])}"
    return f"{stamp}-{secrets.token_hex(3)}"


def _suffix_after(suffix: str) -> str:
    """A random 6-hex suffix greater than `suffix` (or one digit longer when none is)."""
    value = int(suffix, 16) if suffix and all(c in "0123456789abcdef" for c in suffix) else 0
    if value >= 0xFFFFFF:
        return suffix + secrets.token_hex(1)
    return f"{value + 1 + secrets.randbelow(0xFFFFFF - value):06x}"


def backup_key(backup_id: str) -> str:
    return f"backups/{backup_id}.json"


def index_key(backup_id: str, position: int) -> str:
    return f"indexes/{backup_id}/{position}.fidx"


@dataclass
class DiskRecord:
    position: int
    name: str
    disk_key: str
    size: int
    block_size: int
    level: str
    index: str
    index_checksum: str
    full_backup_id: str
    base_backup_id: str | None = None
    format: str = "raw"
    reason: str = ""
    bytes_read: int = 0
    bytes_stored: int = 0
    blocks_total: int = 0
    blocks_changed: int = 0
    blocks_zero: int = 0
    blocks_new_chunks: int = 0
    bytes_new_plain: int = 0
    meta: dict = field(default_factory=dict)


@dataclass
class BackupRecord:
    backup_id: str
    created: str
    finished: str
    level: str
    requested_level: str
    status: str
    disks: list[DiskRecord]
    name: str = ""
    host: str = ""
    tags: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    consistency: str | None = None
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    stackvault_version: str = ""

    @property
    def bytes_read(self) -> int:
        return sum(d.bytes_read for d in self.disks)

    @property
    def bytes_stored(self) -> int:
        return sum(d.bytes_stored for d in self.disks)

    @property
    def size(self) -> int:
        return sum(d.size for d in self.disks)

    def disk(self, name_or_key: str | None) -> DiskRecord:
        """The disk named (by name, key or position); the only disk when `name_or_key` is None."""
        from ..errors import NotFoundError

        if name_or_key is None:
            if len(self.disks) == 1:
                return self.disks[0]
            names = ", ".join(d.name for d in self.disks)
            raise NotFoundError(f"backup {self.backup_id} has {len(self.disks)} disks ({names})",
                                "choose one with --disk NAME")
        for d in self.disks:
            if name_or_key in (d.name, d.disk_key, str(d.position)):
                return d
        raise NotFoundError(f"backup {self.backup_id} has no disk {name_or_key!r}",
                            f"choose one of: {', '.join(d.name for d in self.disks)}")

    def to_json(self) -> bytes:
        doc = {"format": RECORD_FORMAT, "version": RECORD_VERSION, **asdict(self)}
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BackupRecord:
        doc = json.loads(data)
        if doc.get("format") != RECORD_FORMAT:
            raise ValueError("not a stackvault backup record")
        if doc.get("version", 0) > RECORD_VERSION:
            from ..errors import RepositoryError

            raise RepositoryError(f"backup record {doc.get('backup_id')} has format version {doc['version']}, "
                                  f"newer than this stackvault reads ({RECORD_VERSION})", "upgrade stackvault")
        doc.pop("format")
        doc.pop("version")
        doc["disks"] = [DiskRecord(**d) for d in doc["disks"]]
        return cls(**doc)
