"""Store-facing fixes one function at a time: record format versions for a rolling upgrade, a
damaged chunk set aside only while it is still damaged, and objects larger than their reader
accepts refused before they are read into memory."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from stackvault.engine import keys
from stackvault.engine.chunks import encode_chunk
from stackvault.engine.crypto import EncryptedBackend, RepositoryCipher
from stackvault.engine.layout import chunk_key
from stackvault.engine.locks import read_locks
from stackvault.engine.manifest import BackupRecord, DiskRecord, RecordFormatError
from stackvault.engine.repository import DAMAGED_SUFFIX, Repository
from stackvault.errors import CorruptChunkError, DamagedObjectError, DamagedRecordError, RepositoryError
from stackvault.storage.base import ObjectTooLargeError, read_capped
from stackvault.storage.faulty import FaultyBackend
from stackvault.storage.local import LocalBackend
from stackvault.storage.memory import MemoryBackend
from stackvault.storage.retry import RetryingBackend

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

    def get(self, key: str, max_size: int | None = None) -> bytes:
        if key in self.stale:
            return self.stale.pop(key)  # what this reader read earlier
        return super().get(key, max_size)


@pytest.mark.parametrize("encrypted", [False, True])
def test_set_aside_keeps_a_good_copy_stored_meanwhile(encrypted: bool, monkeypatch) -> None:
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


# -- objects larger than their reader accepts ------------------------------------------------------

#: Far more than any cap below, yet costs no disk: a sparse file, as a store could serve.
HUGE = 256 << 20
#: What reading any of them may allocate: the object is never read whole.
BOUND = 8 << 20


def _peak(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by Python while `fn` runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _sparse(path: Path, size: int = HUGE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def _wrapped(kind: str, inner: MemoryBackend):
    if kind == "retry":
        return RetryingBackend(inner)
    if kind == "faulty":
        return FaultyBackend(inner)
    return inner


@pytest.mark.parametrize("kind", ["memory", "retry", "faulty"])
def test_get_max_size_on_memory_and_wrappers(kind: str) -> None:
    backend = _wrapped(kind, MemoryBackend())
    backend.put("locks/a.json", b"x" * 100)
    assert backend.get("locks/a.json", 100) == b"x" * 100
    with pytest.raises(ObjectTooLargeError, match="larger than 99 bytes"):
        backend.get("locks/a.json", 99)


def test_get_max_size_of_a_sealed_object_is_its_plain_size() -> None:
    backend = EncryptedBackend(MemoryBackend(), RepositoryCipher(bytes(32)))
    backend.put("proofs/a.json", b"x" * 100)
    assert backend.get("proofs/a.json", 100) == b"x" * 100
    with pytest.raises(ObjectTooLargeError):
        backend.get("proofs/a.json", 99)


def test_local_get_checks_the_size_before_reading(tmp_path: Path) -> None:
    backend = LocalBackend(str(tmp_path / "repo"))
    backend.put("locks/a.json", b"x" * 100)
    assert backend.get("locks/a.json", 100) == b"x" * 100
    _sparse(tmp_path / "repo" / "locks" / "huge.json")
    with pytest.raises(ObjectTooLargeError):
        backend.get("locks/huge.json", 99)
    assert _peak(lambda: pytest.raises(ObjectTooLargeError, backend.get, "locks/huge.json", 1 << 20)) < BOUND  # noqa: RUF061 - the call form fits the measured lambda


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setattr("stackvault.engine.keys.SCRYPT_N", 1 << 10)  # a cheap key slot: this is no KDF test
    return Repository.init(LocalBackend(str(tmp_path / "repo")), 1 << 16, passphrase="p")


def test_a_huge_record_is_damaged_without_being_read(repo: Repository, tmp_path: Path) -> None:
    _sparse(tmp_path / "repo" / "backups" / f"{BACKUP_ID}.json")

    def get() -> None:
        with pytest.raises(DamagedRecordError, match="larger than 67108864 bytes"):
            repo.get_backup(BACKUP_ID)

    assert _peak(get) < BOUND


def test_a_huge_config_is_damaged_without_being_read(tmp_path: Path) -> None:
    Repository.init(LocalBackend(str(tmp_path / "repo")), 1 << 16)
    os.truncate(tmp_path / "repo" / "config", HUGE)

    def open_() -> None:
        with pytest.raises(DamagedObjectError, match=r"config .* damaged .*larger than"):
            Repository.open(LocalBackend(str(tmp_path / "repo")))

    assert _peak(open_) < BOUND


def test_huge_locks_proofs_and_key_slots_are_not_read(repo: Repository, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _sparse(root / "locks" / "huge.json")
    _sparse(root / "proofs" / f"{BACKUP_ID}.json")
    _sparse(root / "keys" / "0123456789abcdef.json")
    assert _peak(lambda: read_locks(repo)) < BOUND
    [planted] = read_locks(repo)  # read no further than its cap: a lock of unknown owner, for one lease
    assert planted.unreadable is not None and "larger than" in planted.unreadable
    assert _peak(lambda: repo.proofs.load(BACKUP_ID)) < BOUND
    assert repo.proofs.load(BACKUP_ID) is None  # no proof
    bad = keys.read_slots(repo.store, repo.id)[1]
    assert "larger than" in bad["keys/0123456789abcdef.json"].problem
    assert _peak(lambda: keys.read_slots(repo.store, repo.id)) < BOUND


def test_a_store_that_announces_less_than_it_streams_is_cut_off() -> None:
    """An object store's announced length is the store's word: reading stops at the limit + 1 bytes."""
    stream = io.BytesIO(bytes(HUGE))
    assert _peak(lambda: pytest.raises(ObjectTooLargeError, read_capped, stream.read, "backups/x.json",  # noqa: RUF061 - the call form fits the measured lambda
                                       1 << 20, 100)) < BOUND
    assert stream.tell() <= (1 << 20) + 1
    assert read_capped(io.BytesIO(b"x" * 300).read, "backups/x.json", 300, 100) == b"x" * 300
