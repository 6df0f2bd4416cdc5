"""Read locks (restore, verify): taken when they can be written, done without (with a warning) when the
repository cannot be written, and still refused while a live exclusive lock holds the repository."""

import json
import os
import socket

import pytest

from stackvault.engine.locks import RepositoryLock
from stackvault.engine.repository import Repository
from stackvault.errors import LockedError, RepositoryError
from stackvault.storage.memory import MemoryBackend


class ReadOnlyStore(MemoryBackend):
    """A store whose credentials can only read."""

    writable = True

    def put(self, key, data):
        if not self.writable:
            raise RepositoryError("access denied writing " + key, "use credentials that can write")
        super().put(key, data)


@pytest.fixture
def store():
    return ReadOnlyStore()


@pytest.fixture
def repo(store):
    return Repository.init(store)


def test_read_lock_is_a_shared_lock_when_it_can_be_written(repo):
    with RepositoryLock(repo, "read", "restore x") as lock:
        [obj] = list(repo.backend.list("locks/"))
        assert json.loads(repo.backend.get(obj.key))["kind"] == "shared"
        assert lock.warning is None
        with pytest.raises(LockedError):
            RepositoryLock(repo, "exclusive", "prune").acquire()
    assert list(repo.backend.list("locks/")) == []


def test_read_lock_goes_on_without_a_lock_on_a_read_only_store(repo, store):
    store.writable = False
    with RepositoryLock(repo, "read", "restore x") as lock:
        assert "no lock taken (access denied" in lock.warning and "restore reads" in lock.warning
    assert list(repo.backend.list("locks/")) == []


@pytest.mark.parametrize("kind", ["shared", "exclusive"])
def test_jobs_that_write_still_fail_on_a_read_only_store(repo, store, kind):
    store.writable = False
    with pytest.raises(RepositoryError, match="access denied"):
        RepositoryLock(repo, kind, "backup").acquire()


def test_read_lock_without_a_lock_still_respects_a_live_exclusive_one(repo, store):
    repo.backend.put("locks/1-prune.json", json.dumps(
        {"kind": "exclusive", "host": socket.gethostname(), "pid": os.getpid(), "job": "prune",
         "expires": 4e9}).encode())
    store.writable = False
    with pytest.raises(LockedError, match="locked by prune"):
        RepositoryLock(repo, "read", "verify").acquire()
