"""One conformance suite for every storage backend (as restic's backend/test)."""

import pytest

from stackvault.storage.local import LocalBackend
from stackvault.storage.memory import MemoryBackend


@pytest.fixture(params=["local", "memory"])
def backend(request, tmp_path):
    if request.param == "local":
        return LocalBackend(str(tmp_path / "repo"))
    return MemoryBackend()


def test_put_get_replace_delete(backend):
    backend.put("chunks/ab/abc", b"one")
    assert backend.get("chunks/ab/abc") == b"one" and backend.exists("chunks/ab/abc")
    backend.put("chunks/ab/abc", b"two")
    assert backend.get("chunks/ab/abc") == b"two"
    backend.delete("chunks/ab/abc")
    backend.delete("chunks/ab/abc")  # deleting twice is not an error (deletes are retried)
    assert not backend.exists("chunks/ab/abc")
    with pytest.raises(KeyError):
        backend.get("chunks/ab/abc")


def test_list_by_prefix(backend):
    for key in ("backups/a.json", "backups/b.json", "chunks/00/00x", "chunks/ff/ffx", "config"):
        backend.put(key, key.encode())
    assert sorted(o.key for o in backend.list("backups/")) == ["backups/a.json", "backups/b.json"]
    assert sorted(o.key for o in backend.list("chunks/")) == ["chunks/00/00x", "chunks/ff/ffx"]
    assert [o.size for o in backend.list("config")] == [len(b"config")]
    backend.sync()


def test_local_rejects_escaping_keys(tmp_path):
    with pytest.raises(ValueError):
        LocalBackend(str(tmp_path)).put("../evil", b"x")


def test_local_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    import errno
    import os

    from stackvault.errors import RepositoryError

    backend = LocalBackend(str(tmp_path))

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("stackvault.storage.local.write_atomic", no_space)
    with pytest.raises(RepositoryError, match="is full"):
        backend.put("chunks/aa/aa", b"x")
