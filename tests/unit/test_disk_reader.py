"""DiskReader: random reads of a backed-up disk equal its bytes; holes cost no repository read; the
block cache stays within its bound; a sequential reader gets the next blocks fetched ahead."""

from __future__ import annotations

import os
import random
import time

from stackvault.engine.blockindex import BlockIndex, IndexBuilder
from stackvault.engine.chunks import encode_chunk
from stackvault.engine.diskreader import DiskReader
from stackvault.engine.repository import Repository
from stackvault.storage.memory import MemoryBackend

BLOCK = 64 << 10
BLOCKS = 64
DISK = BLOCKS * BLOCK - 1000  # a short last block


def _backup(data_at: range | tuple[int, ...]) -> tuple[Repository, BlockIndex, bytes]:
    repo = Repository.init(MemoryBackend(), BLOCK)
    builder = IndexBuilder(DISK, BLOCK, "20261201T000000000Z-aaaaaa")
    disk = bytearray(DISK)
    for i in data_at:
        data = os.urandom(min(BLOCK, DISK - i * BLOCK))
        disk[i * BLOCK : i * BLOCK + len(data)] = data
        digest = repo.hash_block(data)
        repo.put_chunk(digest, encode_chunk(data, 1))
        builder.add(i, digest)
    return repo, builder.finish(), bytes(disk)


def test_random_reads_equal_the_disk_and_holes_cost_nothing() -> None:
    repo, index, disk = _backup((0, 7, 8, 40, BLOCKS - 1))
    rng = random.Random(7)
    with DiskReader(repo, index, read_ahead=0) as reader:
        assert reader.read(20 * BLOCK, 10 * BLOCK) == bytes(10 * BLOCK)
        assert reader.fetched == 0, "a hole must be answered from the index alone"
        for _ in range(300):
            at = rng.randrange(DISK)
            n = rng.randrange(1, 3 * BLOCK)
            assert reader.read(at, n) == disk[at : at + n]
        assert reader.read(DISK - 10, 100) == disk[-10:]
        assert reader.read(DISK, 100) == b""
        assert reader.fetched <= 5 * 2, "each data block is fetched about once: the cache holds them all"


def test_the_cache_is_bounded() -> None:
    repo, index, disk = _backup(range(BLOCKS))
    with DiskReader(repo, index, cache_bytes=4 * BLOCK, read_ahead=0) as reader:
        for i in range(BLOCKS):
            assert reader.read(i * BLOCK, 10) == disk[i * BLOCK : i * BLOCK + 10]
            assert len(reader._cache) <= 4
        first = reader.fetched
        reader.read(0, 10)  # evicted long ago: fetched again
        assert reader.fetched == first + 1


def test_sequential_reads_fetch_ahead() -> None:
    repo, index, disk = _backup(range(BLOCKS))
    with DiskReader(repo, index, read_ahead=4) as reader:
        reader.read(0, BLOCK)
        reader.read(BLOCK, BLOCK)  # sequential: blocks 2..5 are fetched in the background
        deadline = time.monotonic() + 30
        while reader.fetched < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.fetched >= 6
        assert reader.read(2 * BLOCK, 4 * BLOCK) == disk[2 * BLOCK : 6 * BLOCK]
