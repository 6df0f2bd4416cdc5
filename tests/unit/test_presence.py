"""A Full on an object store learns which chunks exist by listing, not by one call per block.

What a user of S3 or Swift would check: the Full stores exactly the chunks the repository lacks
(a chunk deleted behind its back is uploaded again, one already there is not), and it makes far
fewer calls than one existence check per block. A huge prefix falls back to asking per chunk.
"""

from __future__ import annotations

import os

import pytest

from stackvault.engine import presence
from stackvault.engine.layout import chunk_key
from stackvault.engine.pipeline import DiskBackup
from stackvault.engine.repository import Repository
from stackvault.engine.sources import RawSource
from stackvault.engine.state import DiskBase
from stackvault.storage.base import BackendWrapper
from stackvault.storage.memory import MemoryBackend

BLOCK = 64 << 10


class CountingStore(BackendWrapper):
    """An object store's cost model: every call counts, and it asks for parallel uploads."""

    parallel_calls = 8

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.parallel_calls = 8
        self.calls = {"exists": 0, "list": 0, "put": 0}

    def exists(self, key: str) -> bool:
        self.calls["exists"] += 1
        return super().exists(key)

    def list(self, prefix: str):
        self.calls["list"] += 1
        return super().list(prefix)

    def put(self, key: str, data) -> None:
        self.calls["put"] += int(key.startswith("chunks/"))
        super().put(key, data)


def _image(tmp_path, blocks: int) -> RawSource:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(blocks * BLOCK))
    source = RawSource(path=str(path), name="disk", key="disk", format="raw", meta={})
    source.open()
    return source


def _repo(store: CountingStore) -> Repository:
    repo = Repository.init(store, BLOCK)
    store.calls.update(exists=0, list=0, put=0)
    return repo


def _full(repo: Repository, source: RawSource) -> DiskBackup:
    run = DiskBackup(repo, source, "full", DiskBase(), "20261201T000000000Z-aaaaaa", workers=4)
    run.run()
    return run


def test_full_lists_prefixes_instead_of_asking_per_block_and_stores_only_what_is_missing(tmp_path):
    store = CountingStore(MemoryBackend())
    repo = _repo(store)
    source = _image(tmp_path, 600)
    first = _full(repo, source)
    assert first.stats.blocks_new_chunks == 600 and store.calls["put"] == 600
    assert store.calls["exists"] == 0 and store.calls["list"] <= presence.PREFIXES

    digests = [repo.hash_block(source.read(i * BLOCK, BLOCK)) for i in range(600)]
    store.inner.delete(chunk_key(digests[123]))  # lost behind the repository's back
    store.calls.update(exists=0, list=0, put=0)
    second = _full(repo, source)
    assert second.stats.blocks_new_chunks == 1 and store.calls["put"] == 1
    assert repo.has_chunk(digests[123])
    assert store.calls["exists"] == 1  # the has_chunk just above; the Full itself asked nothing


def test_a_crowded_prefix_falls_back_to_asking_per_chunk(tmp_path, monkeypatch):
    store = CountingStore(MemoryBackend())
    repo = _repo(store)
    source = _image(tmp_path, 300)
    _full(repo, source)
    monkeypatch.setattr(presence, "MAX_PER_PREFIX", 0)
    store.calls.update(exists=0, list=0, put=0)
    again = _full(repo, source)
    assert again.stats.blocks_new_chunks == 0 and store.calls["put"] == 0
    assert store.calls["exists"] == 300


@pytest.mark.parametrize("level", ["incremental", "differential"])
def test_other_levels_and_local_stores_never_list(tmp_path, level):
    store = CountingStore(MemoryBackend())
    repo = _repo(store)
    source = _image(tmp_path, 50)
    DiskBackup(repo, source, level, DiskBase(), "20261201T000000000Z-bbbbbb").run()
    assert store.calls["list"] == 0
    local = CountingStore(MemoryBackend())
    local.parallel_calls = 1
    _full(_repo(local), source)
    assert local.calls["list"] == 0 and local.calls["exists"] == 50
