"""A Full of a big disk keeps no Python object per block, and still stores a repeated block once.

What an operator backing up a multi-TiB volume would check: the proxy's memory does not grow with
the disk beyond the block index, and the repository holds each distinct chunk exactly once.
"""

from __future__ import annotations

import tracemalloc

import pytest

from stackvault.engine import pipeline
from stackvault.engine.pipeline import DiskBackup
from stackvault.engine.repository import Repository
from stackvault.engine.sources import DiskSource
from stackvault.engine.state import DiskBase
from stackvault.storage.base import BackendWrapper
from stackvault.storage.memory import MemoryBackend

BLOCK = 64 << 10


class NumberedBlocks(DiskSource):
    """A virtual disk whose block k holds the number k % `distinct`: as many blocks as wanted, cheaply."""

    def __init__(self, blocks: int, distinct: int) -> None:
        super().__init__(path="virtual", name="disk", key="disk", format="raw", meta={})
        self.size = blocks * BLOCK
        self.distinct = distinct

    def data_extents(self) -> list[tuple[int, int]]:
        return [(0, self.size)]

    def read(self, offset: int, length: int) -> bytes:
        block = bytearray(length)
        block[:8] = (offset // BLOCK % self.distinct + 1).to_bytes(8, "little")
        return bytes(block)


class CountingPuts(BackendWrapper):
    """Counts chunk writes and drops their bytes, so the test measures the engine, not the store; with
    `names`, it also remembers which chunk each write was."""

    def __init__(self, names: bool) -> None:
        super().__init__(MemoryBackend())
        self.chunk_puts = 0
        self.names: dict[str, int] | None = {} if names else None

    def put(self, key: str, data) -> None:
        if not key.startswith("chunks/"):
            return super().put(key, data)
        self.chunk_puts += 1
        if self.names is not None:
            self.names[key] = self.names.get(key, 0) + 1
            super().put(key, b"")


def _full(blocks: int, distinct: int, names: bool = False, parallel_calls: int = 1) -> tuple[DiskBackup,
                                                                                              CountingPuts, int]:
    store = CountingPuts(names)
    store.parallel_calls = parallel_calls  # above 1, a Full learns what exists by listing (an object store)
    repo = Repository.init(store, BLOCK)
    run = DiskBackup(repo, NumberedBlocks(blocks, distinct), "full", DiskBase(), "20261201T000000000Z-aaaaaa",
                     workers=2)
    tracemalloc.start()
    try:
        run.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return run, store, peak


@pytest.mark.slow  # Fulls of growing disks, memory traced
def test_a_fulls_memory_grows_with_the_disk_only_by_its_block_index(monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "CLAIMED_MAX", 1024)
    peaks = {}
    for blocks in (10_000, 40_000):  # 0.6 and 2.4 GiB of 64 KiB blocks, all distinct
        run, store, peaks[blocks] = _full(blocks, blocks)
        assert run.stats.blocks_new_chunks == blocks and store.chunk_puts == blocks
    per_block = (peaks[40_000] - peaks[10_000]) / 30_000
    # The index takes 33 bytes a block; one remembered digest per block would add some 100 more.
    assert per_block < 70, f"memory grew by {per_block:.0f} bytes a block"  # 33 measured, 149 before


@pytest.mark.parametrize("parallel_calls", [1, 8], ids=["directory", "object store"])
def test_a_repeated_block_is_stored_once(monkeypatch, parallel_calls: int) -> None:
    monkeypatch.setattr(pipeline, "CLAIMED_MAX", 8)  # repeats are 50 blocks apart: beyond the window
    run, store, _ = _full(500, 50, names=True, parallel_calls=parallel_calls)
    assert store.names is not None and len(store.names) == 50
    assert all(n == 1 for n in store.names.values()), "a chunk the repository holds was written again"
    assert run.stats.blocks_new_chunks == 50
