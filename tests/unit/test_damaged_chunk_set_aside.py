"""A damaged chunk is set aside on any backend, also one without rename (an object store: the
memory backend stands for it), and in an encrypted repository its sealed bytes move unchanged."""

from __future__ import annotations

import pytest

from stackvault.engine.chunks import encode_chunk
from stackvault.engine.layout import chunk_key
from stackvault.engine.repository import DAMAGED_SUFFIX, Repository
from stackvault.errors import CorruptChunkError
from stackvault.storage.local import LocalBackend
from stackvault.storage.memory import MemoryBackend


@pytest.fixture(params=["memory", "local"])
def store(request, tmp_path):
    return MemoryBackend() if request.param == "memory" else LocalBackend(str(tmp_path / "repo"))


@pytest.mark.parametrize("encrypted", [False, True])
def test_damaged_chunk_is_set_aside_and_stored_again(store, encrypted: bool, monkeypatch) -> None:
    monkeypatch.setattr("stackvault.engine.keys.SCRYPT_N", 1 << 10)  # a cheap key slot: this is no KDF test
    repo = Repository.init(store, 1 << 16, passphrase="p" if encrypted else None)
    block = bytes(range(256)) * 256
    digest = repo.hash_block(block)
    repo.put_chunk(digest, encode_chunk(block, 1))
    key = chunk_key(digest)
    stored = bytearray(store.get(key))
    stored[-1] ^= 1
    store.put(key, bytes(stored))

    with pytest.raises(CorruptChunkError):
        repo.load_block(digest, len(block))
    assert not repo.has_chunk(digest), "the damaged chunk must count as absent"
    assert store.get(key + DAMAGED_SUFFIX) == bytes(stored), "set aside unchanged"

    repo.put_chunk(digest, encode_chunk(block, 1))  # what the next Full does
    assert repo.load_block(digest, len(block)) == block


class ReadOnlyStore(MemoryBackend):
    """A store whose credentials can only read (writes refused, as S3 answers AccessDenied)."""

    read_only = False

    def put(self, key: str, data) -> None:
        if self.read_only:
            raise PermissionError(13, "read-only credentials", key)
        super().put(key, data)


def test_read_only_store_still_reports_the_damage(capsys: pytest.CaptureFixture[str]) -> None:
    store = ReadOnlyStore()
    repo = Repository.init(store, 1 << 16)
    block = bytes(range(256)) * 256
    digest = repo.hash_block(block)
    repo.put_chunk(digest, encode_chunk(block, 1))
    store.put(chunk_key(digest), store.get(chunk_key(digest))[:-3])
    store.read_only = True
    with pytest.raises(CorruptChunkError):
        repo.load_block(digest, len(block))
    assert "could not set the damaged object" in capsys.readouterr().err
    assert store.exists(chunk_key(digest))
