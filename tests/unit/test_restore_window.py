"""Restoring a huge, mostly empty disk: memory does not grow with the disk, zero runs are one call each.

What an operator restoring a 64 GiB volume that holds a few MiB would check: the restore does not
queue a task per block (the process would need gigabytes for a 2 TiB volume), the restored bytes equal
the backed up ones, and a reused device has its empty ranges zeroed in long runs, not block by block.
"""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stackvault.engine import restore as restore_mod
from stackvault.engine.blockindex import BlockIndex, IndexBuilder
from stackvault.engine.chunks import encode_chunk
from stackvault.engine.repository import Repository
from stackvault.engine.restore import DeviceTarget, FileTarget, restore_disk
from stackvault.engine.window import map_bounded
from stackvault.storage.memory import MemoryBackend

BLOCK = 64 << 10
DISK = 64 << 30  # a million blocks
DATA_AT = (0, 5, 6, 300_000, 1_048_575)  # block numbers holding data; the rest are zeros


def _sparse_backup(disk: int = DISK, data_at: tuple[int, ...] = DATA_AT) -> tuple[Repository, BlockIndex,
                                                                                  dict[int, bytes]]:
    repo = Repository.init(MemoryBackend(), BLOCK)
    builder = IndexBuilder(disk, BLOCK, "20261201T000000000Z-aaaaaa")
    blocks = {i: os.urandom(BLOCK) for i in data_at}
    for i, data in blocks.items():
        digest = repo.hash_block(data)
        repo.put_chunk(digest, encode_chunk(data, 1))
        builder.add(i, digest)
    return repo, builder.finish(), blocks


def _read_blocks(path: str, numbers: tuple[int, ...]) -> dict[int, bytes]:
    with open(path, "rb") as f:
        return {i: os.pread(f.fileno(), BLOCK, i * BLOCK) for i in numbers}


def test_a_huge_sparse_disk_restores_in_bounded_memory_with_equal_bytes(tmp_path: Path) -> None:
    repo, index, blocks = _sparse_backup()
    out = tmp_path / "disk.raw"
    tracemalloc.start()
    try:
        stats = restore_disk(repo, index, FileTarget(str(out)), workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.blocks_written == len(DATA_AT)
    # A task per block would be over 500 MiB here; the window holds a few dozen blocks.
    assert peak < 32 << 20, f"restore peaked at {peak >> 20} MiB of Python objects"
    assert out.stat().st_size == DISK
    got = _read_blocks(str(out), DATA_AT + (1, 7, 500_000))
    assert all(hashlib.sha256(got[i]).digest() == hashlib.sha256(blocks[i]).digest() for i in DATA_AT)
    assert got[1] == got[7] == got[500_000] == bytes(BLOCK)
    assert out.stat().st_blocks * 512 < 64 << 20, "zero blocks were written, not left as holes"


def test_a_reused_device_is_zeroed_in_runs_and_its_old_data_is_gone(tmp_path: Path, monkeypatch) -> None:
    # 1 GiB, and runs of at most 64 MiB: where punching holes is not supported, zeros are written.
    disk, data_at = 1 << 30, (0, 5, 6, 3_000, 16_383)
    monkeypatch.setattr(restore_mod, "ZERO_RUN_MAX", 64 << 20)
    repo, index, blocks = _sparse_backup(disk, data_at)
    dev = tmp_path / "volume"
    with open(dev, "wb") as f:  # a volume that held other data before
        f.truncate(disk)
        for i in (1, 7, 2_999, 9_000):
            os.pwrite(f.fileno(), b"\xee" * BLOCK, i * BLOCK)
    calls: list[tuple[int, int]] = []
    zero = DeviceTarget.zero
    monkeypatch.setattr(DeviceTarget, "zero", lambda self, off, n: (calls.append((off, n)), zero(self, off, n)))
    restore_disk(repo, index, DeviceTarget(str(dev)), workers=2)
    got = _read_blocks(str(dev), data_at + (1, 7, 2_999, 9_000))
    assert all(got[i] == blocks[i] for i in data_at)
    assert got[1] == got[7] == got[2_999] == got[9_000] == bytes(BLOCK)
    zero_bytes = disk - len(data_at) * BLOCK
    assert sum(n for _, n in calls) == zero_bytes
    assert len(calls) <= zero_bytes // (64 << 20) + len(data_at) + 1


def test_map_bounded_keeps_order_and_the_window() -> None:
    pulled = yielded = peak = 0
    guard = threading.Lock()

    def items():
        nonlocal pulled, peak
        for i in range(200):
            with guard:
                pulled += 1
                peak = max(peak, pulled - yielded)
            yield i

    with ThreadPoolExecutor(4) as pool:
        out = []
        for r in map_bounded(pool, lambda x: x * x, items(), 8):
            out.append(r)
            yielded += 1
    assert out == [i * i for i in range(200)]
    assert peak <= 9  # the window, plus the item being submitted


def test_map_bounded_raises_the_first_error_and_cancels_the_rest() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise OSError("disk gone")
        return i

    with ThreadPoolExecutor(1) as pool, pytest.raises(OSError, match="disk gone"):
        list(map_bounded(pool, work, range(10_000), 4))
    assert len(started) < 20
