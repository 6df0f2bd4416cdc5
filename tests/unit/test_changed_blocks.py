"""The changed-block read plan (engine/changed.py) without a cluster: which blocks a listing of changed
extents makes the engine read, and the sample that checks the listing against the previous index.

A real librbd listing never misses a write (tests/ceph/test_rbd_changed_blocks.py); the sample exists
for the day one does, so here a listing that misses a change is given on purpose.
"""

from __future__ import annotations

import itertools
import os
import random

import blake3

from stackvault.engine.blockindex import ZERO_DIGEST, BlockIndex, IndexBuilder
from stackvault.engine.changed import (
    KEEP,
    READ,
    ZERO,
    ReadPlan,
    mark_extent,
    pick_sample,
    pick_unchanged_sample,
    plan_changed_blocks,
    plan_runs,
    ranges_of,
    split_by,
)

BS = 4096


def per_block(runs: list[tuple[int, int, int]]) -> bytes:
    """A plan's runs spelled out, one action a block (for small disks)."""
    return b"".join(bytes([action]) * (end - start) for start, end, action in runs)


def runs_of(actions: bytes) -> list[tuple[int, int, int]]:
    return [(i, i + 1, a) for i, a in enumerate(actions)]


def plan_of(size: int, extents: list[tuple[int, int, bool]]) -> bytes:
    marks: list = []
    for off, n, exists in extents:
        mark_extent(marks, BS, size, off, n, exists)
    runs = plan_runs(marks, -(-size // BS))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(runs)) and runs[0][0] == 0, "runs cover the disk in order"
    return per_block(runs)


def test_written_extents_read_every_block_they_touch():
    assert plan_of(8 * BS, [(BS + 10, 2 * BS, True)]) == bytes([KEEP, READ, READ, READ, KEEP, KEEP, KEEP, KEEP])
    assert plan_of(8 * BS, [(0, 1, True), (8 * BS - 1, 1, True)]) == bytes([READ] + [KEEP] * 6 + [READ])


def test_discarded_extents_zero_whole_blocks_and_read_partial_ones():
    assert plan_of(8 * BS, [(BS // 2, 3 * BS, False)]) == bytes([READ, ZERO, ZERO, READ, KEEP, KEEP, KEEP, KEEP])
    assert plan_of(8 * BS, [(BS + 1, 10, False)]) == bytes([KEEP, READ] + [KEEP] * 6)
    # the last block of a disk whose size is no multiple of the block size, discarded to the end
    assert plan_of(3 * BS + 100, [(3 * BS, 100, False)]) == bytes([KEEP, KEEP, KEEP, ZERO])
    # a block both written (by one extent) and inside a discard (of another) is read
    assert plan_of(8 * BS, [(0, 4 * BS, False), (2 * BS, 10, True)]) == bytes([ZERO, ZERO, READ, ZERO] + [KEEP] * 4)


def test_a_plan_of_a_huge_disk_is_a_few_runs():
    marks: list = []
    blocks = 32 << 20  # 16 TiB of 512 KiB blocks
    mark_extent(marks, 512 << 10, blocks << 19, 5 << 30, 4096, True)
    assert plan_runs(marks, blocks) == [(0, 10240, KEEP), (10240, 10241, READ), (10241, blocks, KEEP)]


def test_the_sample_picks_distinct_unchanged_blocks_at_least_eight():
    runs = [(0, 100, READ), (100, 5000, KEEP), (5000, 5100, ZERO), (5100, 10_100, KEEP)]
    sample = pick_sample(ranges_of(runs, KEEP), 0.005, random.Random(1))
    assert len(sample) == 50 and len(set(sample)) == 50 and sample == sorted(sample)
    assert all(100 <= i < 5000 or 5100 <= i < 10_100 for i in sample)
    assert len(pick_sample(ranges_of(runs, KEEP), 0.0001, random.Random(1))) == 8
    assert pick_sample(ranges_of(runs_of(bytes([KEEP, READ, KEEP])), KEEP), 0.005, random.Random(1)) == [0, 2]
    zeros = pick_sample(ranges_of(runs, ZERO), 0.005, random.Random(1))  # discarded blocks are sampled the same way
    assert len(zeros) == 8 and all(5000 <= i < 5100 for i in zeros)


def test_ranges_split_into_the_parts_inside_and_outside_the_data_runs():
    inside, outside = split_by([(0, 10), (20, 30), (40, 50)], [(5, 25), (28, 29), (60, 70)])
    assert inside == [(5, 10), (20, 25), (28, 29)]
    assert outside == [(0, 5), (25, 28), (29, 30), (40, 50)]
    assert split_by([(0, 4)], []) == ([], [(0, 4)])


def test_the_unchanged_sample_follows_the_data_written_not_the_provisioned_size():
    """16 GiB of 512 KiB blocks, 1 GiB of it written: the sample is a share of the 2,048 written
    blocks and a few never-written ones, as it would be on a 64 GiB image holding the same data."""
    bs, written = 512 << 10, 2048
    for blocks in (32_768, 131_072):
        builder = IndexBuilder(blocks * bs, bs, "b")
        for i in range(written):
            builder.add(i * 16, blake3.blake3(i.to_bytes(8, "little")).digest())  # scattered data
        keep = builder.finish()
        runs = [(0, 1, READ), (1, blocks, KEEP)]
        sample = pick_unchanged_sample(runs, keep, 0.005, random.Random(5))
        on_data = [i for i in sample if keep.digest(i) != ZERO_DIGEST]
        assert len(on_data) == 11 and len(sample) == 11 + 8  # ceil(0.005 * 2047), and 8 empty blocks
        assert pick_unchanged_sample(runs, keep, 0, random.Random(5)) == []


class Listing:
    """A disk in memory whose listing of changes is given: what a source that lists changes offers."""

    lists_changes = True

    def __init__(self, data: bytearray, extents: list[tuple[int, int, bool]]):
        self.data, self.extents, self.size = data, extents, len(data)
        self.reads = 0

    def changed_extents(self, base_meta, emit):
        for extent in self.extents:
            emit(*extent)

    def read(self, offset: int, length: int) -> bytes:
        self.reads += length
        return bytes(self.data[offset : offset + length])


def index_of(data: bytes) -> BlockIndex:
    builder = IndexBuilder(len(data), BS, "b")
    for i in range(-(-len(data) // BS)):
        block = data[i * BS : (i + 1) * BS]
        builder.add(i, ZERO_DIGEST if not any(block) else blake3.blake3(block).digest())
    return builder.finish()


META = {"rbd": {"snapshot": "s1"}}


def test_a_listing_that_covers_the_change_reads_only_the_listed_blocks_and_the_sample():
    before = bytearray(os.urandom(64 * BS))
    keep = index_of(bytes(before))
    after = bytearray(before)
    after[5 * BS : 5 * BS + 10] = b"x" * 10
    source = Listing(after, [(5 * BS, 10, True)])
    plan = plan_changed_blocks(source, META, keep, 0.005, lambda b: blake3.blake3(b).digest(), random.Random(2))
    assert isinstance(plan, ReadPlan)
    assert per_block(plan.runs)[5] == READ and per_block(plan.runs).count(KEEP) == 63
    assert plan.info["path"] == "changed_blocks" and plan.info["blocks_listed"] == 1
    assert plan.info["sample_blocks"] == 8 and plan.info["sample_mismatches"] == 0
    assert source.reads == plan.bytes_read == 8 * BS


def test_a_listing_that_missed_a_change_is_caught_by_the_sample_and_the_disk_is_read_in_full():
    before = bytearray(os.urandom(16 * BS))
    keep = index_of(bytes(before))
    after = bytearray(before)
    after[9 * BS] ^= 1  # changed, but the listing only names block 2
    source = Listing(after, [(2 * BS, BS, True)])
    info = plan_changed_blocks(source, META, keep, 1.0, lambda b: blake3.blake3(b).digest(), random.Random(3))
    assert info["path"] == "full_read"
    assert info["why"] == "changed-block list missed 1 of 15 sampled blocks"
    assert info["sample_mismatches"] == 1 and info["sample_bytes"] == 15 * BS


def test_a_listing_that_wrongly_says_blocks_were_discarded_is_caught_by_the_sample():
    """Blocks a listing calls discarded become zeros in the new index without being read: a wrong
    discard would lose data, so some of them are sampled as well."""
    before = bytearray(os.urandom(64 * BS))
    keep = index_of(bytes(before))
    after = bytearray(before)
    after[40 * BS : 44 * BS] = bytes(4 * BS)  # truly discarded
    source = Listing(after, [(40 * BS, 4 * BS, False), (10 * BS, 2 * BS, False)])  # 10-11 still hold data
    info = plan_changed_blocks(source, META, keep, 0.005, lambda b: blake3.blake3(b).digest(), random.Random(4))
    assert info["path"] == "full_read" and info["sample_zero_blocks"] == 6
    assert info["why"] == "changed-block list missed 2 of 14 sampled blocks"
    after[10 * BS : 12 * BS] = bytes(2 * BS)  # now the listing is right
    plan = plan_changed_blocks(source, META, keep, 0.005, lambda b: blake3.blake3(b).digest(), random.Random(4))
    assert isinstance(plan, ReadPlan) and plan.info["sample_mismatches"] == 0


def test_a_source_that_cannot_diff_and_a_resized_disk_fall_back_to_a_full_read():
    keep = index_of(bytes(8 * BS))

    class Gone(Listing):
        def changed_extents(self, base_meta, emit):
            return "base snapshot s1 no longer exists"

    hasher = lambda b: blake3.blake3(b).digest()  # noqa: E731 - a one-line helper
    assert plan_changed_blocks(Gone(bytearray(8 * BS), []), META, keep, 0.005, hasher) == {
        "path": "full_read", "why": "base snapshot s1 no longer exists"}
    resized = plan_changed_blocks(Listing(bytearray(9 * BS), []), META, keep, 0.005, hasher)
    assert resized == {"path": "full_read", "why": f"image resized from {8 * BS} to {9 * BS} bytes"}


def test_the_engine_with_a_plan_reads_only_its_blocks_and_builds_the_index_a_full_read_builds(tmp_path):
    from stackvault.engine.pipeline import DiskBackup
    from stackvault.engine.repository import Repository
    from stackvault.engine.sources import RawSource
    from stackvault.engine.state import DiskBase
    from stackvault.storage.memory import MemoryBackend

    block = 64 << 10
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(32 * block))
    repo = Repository.init(MemoryBackend(), block)

    def backup(level: str, base: DiskBase, backup_id: str, plan=None):
        source = RawSource(path=str(path), name="disk", key="disk", format="raw", meta={})
        source.open()
        try:
            run = DiskBackup(repo, source, level, base, backup_id, plan=plan)
            index, bitmap = run.run()
        finally:
            source.close()
        return index, bitmap, run.stats

    first, bits, _ = backup("full", DiskBase(), "20261201T000000000Z-aaaaaa")
    with open(path, "r+b") as f:
        f.seek(3 * block + 100)
        f.write(b"changed")
        f.seek(20 * block)
        f.write(bytes(2 * block))  # discarded: zeros
    base = DiskBase(previous=first, bitmap=bits, base_backup_id=first.backup_id, full_backup_id=first.backup_id)
    marks: list = []
    mark_extent(marks, block, 32 * block, 3 * block + 100, 7, True)
    mark_extent(marks, block, 32 * block, 20 * block, 2 * block, False)
    plan = ReadPlan(plan_runs(marks, 32), first)
    fast, _, stats = backup("incremental", base, "20261201T000001000Z-bbbbbb", plan)
    whole, _, whole_stats = backup("incremental", base, "20261201T000002000Z-cccccc")
    assert list(fast.data_blocks()) == list(whole.data_blocks())
    assert stats.bytes_read == block and whole_stats.bytes_read == 32 * block  # zeros written, not a hole
    assert stats.blocks_changed == whole_stats.blocks_changed == 3


def test_without_librbd_bindings_only_an_rbd_source_fails_and_says_how_to_get_them(monkeypatch, tmp_path):
    import sys

    import pytest

    from stackvault.engine.sources import open_source
    from stackvault.errors import SourceError

    monkeypatch.setitem(sys.modules, "rbd", None)  # what a Python without the bindings sees
    monkeypatch.setitem(sys.modules, "rados", None)
    with pytest.raises(SourceError) as err:
        open_source("rbd:volumes/disk@s1")
    assert "python3-rbd" in str(err.value) and "\n" not in str(err.value)
    path = tmp_path / "disk.img"
    path.write_bytes(b"x" * 4096)
    with open_source(f"file:{path}") as source:
        assert source.size == 4096
