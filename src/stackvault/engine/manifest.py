"""Backup records: the JSON that commits a backup and describes it without any other source of truth.

`backups/<id>.json` is written last, after every chunk and every disk's block index is durable, so
its presence is the commit point. It carries everything needed to rebuild the catalog and the working
state (levels, sizes, the Full each disk is relative to, source metadata), and the paths of the
per-disk block indexes (`indexes/<id>/<n>.fidx`).

The store is not trusted, so reading a record checks everything before any of it is used: a
`checksum` (BLAKE3 of the canonical JSON of every other field, the backup id included) names
accidental damage, and every field's type and range is checked, so a damaged or forged record
becomes one `RecordFormatError` naming the problem instead of a traceback wherever it is used.
Records written before the checksum existed are still read (`checked` is then False).

Version 2 is a record with a checksum: a proxy of a version that knows only version 1 records (no
checksum field) refuses it in one line ("upgrade stackvault") during a rolling upgrade instead of
failing on the unknown field. Version 1 is still read (the checksum is checked when there is one);
a version 2 record without its checksum is damaged.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from .crypto import canonical_checksum
from .layout import index_key

RECORD_FORMAT = "stackvault-backup"
RECORD_VERSION = 2
#: Records written before the checksum existed; also read.
UNCHECKED_VERSION = 1
LEVELS = ("full", "incremental", "differential")
#: A record is JSON of a few KiB per disk; anything far larger was not written by stackvault.
MAX_RECORD_BYTES = 64 << 20
_ID = re.compile(r"[0-9]{8}T[0-9]{6,9}Z-[0-9a-f]{1,40}")


class RecordFormatError(ValueError):
    """The bytes are not an intact backup record (not JSON, a field missing or of the wrong type,
    checksum mismatch); `str()` names the problem."""


def valid_backup_id(backup_id: object) -> bool:
    """Whether `backup_id` has the shape `new_backup_id` makes (so it is safe in an object key)."""
    return isinstance(backup_id, str) and _ID.fullmatch(backup_id) is not None


def new_backup_id(now: datetime | None = None, after: str | None = None) -> str:
    """Sortable by time (to the millisecond), unique without coordination between proxies.

    Ids order backups everywhere ("latest", the base of an Incremental, retention), so an id is never
    smaller than `after`, the newest id already in the repository: two backups in the same
    millisecond, or a clock that stepped back, still sort in the order they were made.
    """
    now = now or datetime.now(UTC)
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
    #: How a source that lists its changes was read: `path` changed_blocks or full_read, `why`, and
    #: for the changed-block path the base snapshot, blocks listed, listing time and the sample's result.
    read: dict = field(default_factory=dict)


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

    #: False for a record written before records carried a checksum (set by `from_json`).
    checked = True

    def to_json(self) -> bytes:
        doc = {"format": RECORD_FORMAT, "version": RECORD_VERSION, **asdict(self)}
        doc["checksum"] = canonical_checksum(doc)
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, backup_id: str | None = None) -> BackupRecord:
        """The record in `data`; with `backup_id`, also that it is that backup's record (not another's
        copied over it). Raises RecordFormatError (or RepositoryError for a newer version) only."""
        if len(data) > MAX_RECORD_BYTES:
            raise RecordFormatError(f"{len(data)} bytes, far more than a backup record")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise RecordFormatError("not JSON (truncated or damaged)") from None
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise RecordFormatError("not a stackvault backup record")
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RecordFormatError(f"invalid format version {version!r}")
        if version > RECORD_VERSION:
            from ..errors import RepositoryError

            raise RepositoryError(f"backup record {doc.get('backup_id')} has format version {version}, "
                                  f"newer than this stackvault reads ({RECORD_VERSION})", "upgrade stackvault")
        if version > UNCHECKED_VERSION and "checksum" not in doc:
            raise RecordFormatError("field 'checksum' is missing")
        checksum = doc.pop("checksum", None)
        if checksum is not None and checksum != canonical_checksum(doc):
            raise RecordFormatError("checksum mismatch (altered or damaged)")
        _check_fields(doc, _RECORD_FIELDS, "")
        if not valid_backup_id(doc["backup_id"]):
            raise RecordFormatError(f"invalid backup id {doc['backup_id']!r}")
        if backup_id is not None and doc["backup_id"] != backup_id:
            raise RecordFormatError(f"it names backup {doc['backup_id']}, not {backup_id} (copied over another)")
        if not doc["disks"]:
            raise RecordFormatError("it lists no disks")
        disks = []
        for n, d in enumerate(doc["disks"]):
            if not isinstance(d, dict):
                raise RecordFormatError(f"disk {n} is not an object")
            _check_fields(d, _DISK_FIELDS, f"disk {n} ")
            _check_disk(d, doc["backup_id"], n)
            disks.append(DiskRecord(**{k: v for k, v in d.items() if k in _DISK_FIELDS}))
        doc["disks"] = disks
        record = cls(**{k: v for k, v in doc.items() if k in _RECORD_FIELDS})
        record.checked = checksum is not None
        return record


# field -> (accepted types, required). bool is an int subclass: checked apart in _check_fields.
_NUM = (int, float)
_RECORD_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "backup_id": ((str,), True), "created": ((str,), True), "finished": ((str,), True), "level": ((str,), True),
    "requested_level": ((str,), True), "status": ((str,), True), "disks": ((list,), True),
    "name": ((str,), False), "host": ((str,), False), "tags": ((dict,), False), "source": ((dict,), False),
    "consistency": ((str, type(None)), False), "warnings": ((list,), False), "duration_s": (_NUM, False),
    "stackvault_version": ((str,), False),
}
_DISK_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "position": ((int,), True), "name": ((str,), True), "disk_key": ((str,), True), "size": ((int,), True),
    "block_size": ((int,), True), "level": ((str,), True), "index": ((str,), True),
    "index_checksum": ((str,), True), "full_backup_id": ((str,), True), "base_backup_id": ((str, type(None)), False),
    "format": ((str,), False), "reason": ((str,), False), "bytes_read": ((int,), False),
    "bytes_stored": ((int,), False), "blocks_total": ((int,), False), "blocks_changed": ((int,), False),
    "blocks_zero": ((int,), False), "blocks_new_chunks": ((int,), False), "bytes_new_plain": ((int,), False),
    "meta": ((dict,), False), "read": ((dict,), False),
}


def _check_fields(doc: dict, fields: dict[str, tuple[tuple[type, ...], bool]], where: str) -> None:
    for name, (types, required) in fields.items():
        if name not in doc:
            if required:
                raise RecordFormatError(f"{where}field {name!r} is missing")
            continue
        value = doc[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise RecordFormatError(f"{where}field {name!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, (int, float)) and value < 0:
            raise RecordFormatError(f"{where}field {name!r} is negative")


def _check_disk(d: dict, backup_id: str, n: int) -> None:
    """The values a restore relies on: a sane geometry, and an index key of this backup."""
    bs = d["block_size"]
    if bs < 512 or bs > (1 << 30) or bs & (bs - 1):
        raise RecordFormatError(f"disk {n} has an invalid block size {bs}")
    if d["level"] not in LEVELS:
        raise RecordFormatError(f"disk {n} has an unknown level {d['level']!r}")
    if d["index"] != index_key(backup_id, d["position"]):
        raise RecordFormatError(f"disk {n} names the index {d['index']!r}, not {index_key(backup_id, d['position'])}")
    if not re.fullmatch(r"[0-9a-f]{64}", d["index_checksum"]):
        raise RecordFormatError(f"disk {n} has an invalid index checksum")
