"""Repository locks: exclusive excludes everything, shared coexist, dead holders do not block."""

import json

import pytest

from stackvault.engine.locks import RepositoryLock
from stackvault.engine.repository import Repository
from stackvault.errors import LockedError
from stackvault.storage.memory import MemoryBackend


@pytest.fixture
def repo():
    return Repository.init(MemoryBackend())


def test_shared_locks_coexist_and_exclusive_waits_for_them(repo):
    with RepositoryLock(repo, "shared", "backup a"), RepositoryLock(repo, "shared", "backup b"):
        with pytest.raises(LockedError, match="locked by backup"):
            RepositoryLock(repo, "exclusive", "gc").acquire()
    with RepositoryLock(repo, "exclusive", "gc"):
        with pytest.raises(LockedError, match="locked by gc"):
            RepositoryLock(repo, "shared", "backup c").acquire()
    assert list(repo.backend.list("locks/")) == []


def test_lock_of_a_dead_process_does_not_block(repo):
    repo.backend.put("locks/1-dead.json", json.dumps(
        {"kind": "exclusive", "host": __import__("socket").gethostname(), "pid": 2**22 + 12345,
         "job": "gc", "expires": 4e9}).encode())
    with RepositoryLock(repo, "shared", "backup"):
        pass


def test_expired_lease_does_not_block(repo):
    repo.backend.put("locks/1-old.json", json.dumps(
        {"kind": "exclusive", "host": "other-proxy", "pid": 1, "job": "gc", "expires": 1.0}).encode())
    with RepositoryLock(repo, "exclusive", "prune"):
        pass
    assert [o.key for o in repo.backend.list("locks/")] == []
