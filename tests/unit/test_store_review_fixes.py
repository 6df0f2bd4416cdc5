"""Store-facing fixes one function at a time: record format versions for a rolling upgrade, and a
damaged chunk set aside only while it is still damaged."""

from __future__ import annotations

import json

import pytest

from stackvault.engine.chunks import chunk_key, encode_chunk
from stackvault.engine.manifest import BackupRecord, DiskRecord, RecordFormatError
from stackvault.engine.repository import DAMAGED_SUFFIX, Repository
from stackvault.errors import CorruptChunkError, RepositoryError
from stackvault.storage.memory import MemoryBackend

BACKUP_ID = "20261201T000000000Z-abcdef"


def _record_doc() -> dict:
    disk = DiskRecord(position=0, name="disk", disk_key="file:/x", size=1 << 20, block_size=65536, level="full",
                      index=f"indexes/{BACKUP_ID}/0.fidx", index_checksum="ab" * 32, full_backup_id=BACKUP_ID)
    record = BackupRecord(backup_id=BACKUP_ID, created="2026-12-01T00:00:00+00:00",
                          finished="2026-12-01T00:00:01+00:00", level="full", requested_level="full",
                          status="success", disks=[disk])
    return json.loads(record.to_json())


def test_a_record_with_a_checksum_is_refused_by_readers_of_version_1() -> None:
    """A proxy that reads only version 1 records (no checksum field) checks `version > 1` first and
    says "upgrade stackvault"; a record with a checksum must therefore not claim version 1."""
    doc = _record_doc()
    assert "checksum" in doc
    assert doc["version"] == 2


def test_record_versions_read() -> None:
    doc = _record_doc()
    assert BackupRecord.from_json(json.dumps(doc).encode(), BACKUP_ID).checked
    older = dict(doc, version=1)  # as older versions wrote it: no checksum
    del older["checksum"]
    assert not BackupRecord.from_json(json.dumps(older).encode(), BACKUP_ID).checked
    stripped = dict(doc)
    del stripped["checksum"]
    with pytest.raises(RecordFormatError, match="checksum"):
        BackupRecord.from_json(json.dumps(stripped).encode(), BACKUP_ID)
    with pytest.raises(RepositoryError, match="newer than this stackvault reads"):
        BackupRecord.from_json(json.dumps(dict(doc, version=3)).encode(), BACKUP_ID)


class LateGoodCopy(MemoryBackend):
    """A store on which this reader read the damaged copy of one chunk, and before it could set that
    copy aside, another reader did and a Full stored the good copy again (and committed)."""

    def __init__(self) -> None:
        super().__init__()
        self.stale: dict[str, bytes] = {}

    def get(self, key: str) -> bytes:
        if key in self.stale:
            return self.stale.pop(key)  # what this reader read earlier
        return super().get(key)


@pytest.mark.parametrize("encrypted", [False, True])
def test_set_aside_keeps_a_good_copy_stored_meanwhile(encrypted: bool, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("stackvault.engine.keys.SCRYPT_N", 1 << 10)  # a cheap key slot: this is no KDF test
    store = LateGoodCopy()
    repo = Repository.init(store, 1 << 16, passphrase="p" if encrypted else None)
    block = bytes(range(256)) * 256
    digest = repo.hash_block(block)
    repo.put_chunk(digest, encode_chunk(block, 1))
    key = chunk_key(digest)
    good = store.get(key)
    damaged = bytearray(good)
    damaged[-1] ^= 1
    store.stale[key] = bytes(damaged)

    with pytest.raises(CorruptChunkError):
        repo.load_block(digest, len(block))  # the damage this reader saw is still reported
    assert store.exists(key), "the good copy stored meanwhile was thrown away"
    assert store.get(key) == good
    assert not store.exists(key + DAMAGED_SUFFIX)
    assert repo.load_block(digest, len(block)) == block
