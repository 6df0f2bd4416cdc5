"""The changed-block read plan: which blocks an Incremental must read when the source lists its changes.

A source that keeps snapshots (an RBD image) can list the extents written since the snapshot an earlier
backup was read from. Only the blocks those extents touch are read and hashed; every other block keeps
the digest the earlier backup's index holds, so the new index is still complete (a synthetic full)
while the disk is read only where it changed. Blocks wholly inside a discarded extent are zeros and
are not read either.

The list is trusted, but checked: a random sample of the blocks it calls unchanged (drawn from those
holding data, plus a few never-written ones) is read anyway and compared with the earlier index, and
a few of those it calls discarded are read and must be zeros. One mismatch and the plan is dropped:
the disk is read in full, with a warning, because a list that missed one block may have missed others.

The plan is a list of runs of blocks, each ZERO, READ or KEEP: memory follows the number of extents
listed (the changes), never the size of the disk.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .blockindex import ZERO_DIGEST, BlockIndex, block_count

#: What the pipeline does with a block: ZERO (no data: not read), READ, KEEP (take the earlier digest).
ZERO, READ, KEEP = 0, 1, 2
#: The fewest unchanged blocks a sample checks, when the disk has that many.
MIN_SAMPLE = 8

Reader = Callable[[int, int], bytes]
Hasher = Callable[[bytes], bytes]
#: (first block, end block, action): a run of blocks the pipeline treats alike.
Run = tuple[int, int, int]


@dataclass
class ReadPlan:
    """Runs covering every block of the disk, in order; `keep` holds the digests of the KEEP blocks."""

    runs: list[Run]
    keep: BlockIndex
    bytes_read: int = 0  # by the sample, before the pipeline runs
    info: dict = field(default_factory=dict)


def full_read(why: str, **info: object) -> dict:
    """The `read` report of a disk read in full, and why."""
    return {"path": "full_read", "why": why, **info}


def mark_extent(marks: list[Run], block_size: int, size: int, offset: int, length: int, exists: bool) -> None:
    """Note the blocks one changed extent touches: READ, or ZERO for blocks wholly inside a discarded
    one (extents of one listing never overlap, so such a block holds nothing else)."""
    end = min(offset + length, size)
    if length <= 0 or offset >= end:
        return
    first, last = offset // block_size, (end - 1) // block_size
    if exists:
        marks.append((first, last + 1, READ))
        return
    whole_first = -(-offset // block_size)
    whole_last = (end // block_size if end < size else block_count(size, block_size)) - 1
    for i in sorted({first, last}):  # partly discarded: the rest of the block may hold data
        if not whole_first <= i <= whole_last:
            marks.append((i, i + 1, READ))
    if whole_first <= whole_last:
        marks.append((whole_first, whole_last + 1, ZERO))


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def plan_runs(marks: list[Run], blocks: int) -> list[Run]:
    """The marks as runs covering blocks [0, blocks) in order: READ where any mark reads (a block
    both read and discarded is read), ZERO where only discards are, KEEP everywhere else."""
    reads = _union([(s, e) for s, e, action in marks if action == READ])
    runs: list[Run] = [(s, e, READ) for s, e in reads]
    r = 0
    for start, end in _union([(s, e) for s, e, action in marks if action == ZERO]):
        while r < len(reads) and reads[r][1] <= start:
            r += 1
        k = r
        while start < end:  # the discarded range less the reads inside it
            if k < len(reads) and reads[k][0] < end:
                if start < reads[k][0]:
                    runs.append((start, reads[k][0], ZERO))
                start = max(start, reads[k][1])
                k += 1
            else:
                runs.append((start, end, ZERO))
                break
    out: list[Run] = []
    at = 0
    for start, end, action in sorted(runs):
        if at < start:
            out.append((at, start, KEEP))
        out.append((start, end, action))
        at = end
    if at < blocks:
        out.append((at, blocks, KEEP))
    return out


def ranges_of(runs: list[Run], kind: int) -> list[tuple[int, int]]:
    """[start, end) of the runs of one kind (KEEP, ZERO or READ), in order."""
    return [(start, end) for start, end, action in runs if action == kind]


def split_by(ranges: list[tuple[int, int]], data: Iterable[tuple[int, int]]) -> tuple[list[tuple[int, int]],
                                                                                    list[tuple[int, int]]]:
    """`ranges` cut into the parts inside the sorted, disjoint `data` ranges and the parts outside
    them, both in order: one walk over both lists."""
    inside: list[tuple[int, int]] = []
    outside: list[tuple[int, int]] = []
    data_iter = iter(data)
    current = next(data_iter, None)
    for start, end in ranges:
        at = start
        while at < end:
            while current is not None and current[1] <= at:
                current = next(data_iter, None)
            if current is None or current[0] >= end:
                outside.append((at, end))
                break
            if at < current[0]:
                outside.append((at, current[0]))
                at = current[0]
            stop = min(end, current[1])
            inside.append((at, stop))
            at = stop
    return inside, outside


def pick_sample(ranges: list[tuple[int, int]], share: float, rng: random.Random,
                minimum: int = MIN_SAMPLE) -> list[int]:
    """Distinct blocks of the given ranges, in disk order: `share` of them, at least `minimum` (or all
    there are)."""
    total = sum(end - start for start, end in ranges)
    want = min(total, max(minimum, math.ceil(total * share)))
    chosen = range(total) if want == total else sorted(rng.sample(range(total), want))
    sample, r, skipped = [], 0, 0
    for k in chosen:  # the k-th block of the ranges, walking them once
        while k - skipped >= ranges[r][1] - ranges[r][0]:
            skipped += ranges[r][1] - ranges[r][0]
            r += 1
        sample.append(ranges[r][0] + k - skipped)
    return sample


def pick_unchanged_sample(runs: list[Run], keep: BlockIndex, share: float, rng: random.Random) -> list[int]:
    """The KEEP blocks to check: `share` of those the earlier backup found holding data (at least
    MIN_SAMPLE), and MIN_SAMPLE of those it found empty.

    Drawn from the data and not from the whole disk, so that the sample's cost follows what the disk
    holds, not its provisioned size: on a 64 GiB image with 8 GiB written, a share of every unchanged
    block read mostly never-written space, and read 4 times more than a share of the data does. The
    few empty blocks still check that the listing saw writes into space that was never written.
    """
    if share <= 0:
        return []
    written, empty = split_by(ranges_of(runs, KEEP), keep.data_runs())
    return sorted(pick_sample(written, share, rng) + pick_sample(empty, 0, rng))


def sample_mismatches(sample: list[int], keep: BlockIndex, read: Reader, hash_block: Hasher,
                      zeros: frozenset[int] = frozenset()) -> int:
    """How many sampled blocks no longer hold what `keep` says they hold (those in `zeros`: what a
    discard leaves, zeros)."""
    zero = bytes(keep.block_size)
    missed = 0
    for i in sample:
        length = keep.block_length(i)
        data = read(i * keep.block_size, length)
        digest = ZERO_DIGEST if data == zero[:length] else hash_block(data)
        missed += digest != (ZERO_DIGEST if i in zeros else keep.digest(i))
    return missed


def plan_changed_blocks(source, base_meta: dict, keep: BlockIndex, share: float,  # a DiskSource
                        hash_block: Hasher, rng: random.Random | None = None) -> ReadPlan | dict:
    """The read plan against the earlier backup whose `meta` and index (`keep`) are given; or, when
    the source cannot list its changes since then or the sample disagrees, the `read` report of a full
    read saying why."""
    size, bs = source.size, keep.block_size
    if keep.disk_size != size:
        return full_read(f"image resized from {keep.disk_size} to {size} bytes")
    marks: list[Run] = []
    started = time.monotonic()
    why = source.changed_extents(base_meta, lambda off, n, exists: mark_extent(marks, bs, size, off, n, exists))
    listing_s = round(time.monotonic() - started, 4)
    if why:
        return full_read(why)
    base_snapshot = base_meta["rbd"]["snapshot"]
    runs = plan_runs(marks, block_count(size, bs))
    listed = sum(end - start for start, end, action in runs if action != KEEP)
    rng = rng or random.Random()
    # blocks said to be discarded are checked too: a listing that wrongly says so would lose data
    zeros = pick_sample(ranges_of(runs, ZERO), share, rng) if share > 0 else []
    sample = sorted(pick_unchanged_sample(runs, keep, share, rng) + zeros)
    missed = sample_mismatches(sample, keep, source.read, hash_block, frozenset(zeros))
    info = {"base_snapshot": base_snapshot, "blocks_listed": listed, "listing_s": listing_s,
            "sample_blocks": len(sample), "sample_zero_blocks": len(zeros), "sample_mismatches": missed}
    sample_bytes = sum(keep.block_length(i) for i in sample)
    if missed:
        return full_read(f"changed-block list missed {missed} of {len(sample)} sampled blocks",
                         sample_bytes=sample_bytes, **info)
    return ReadPlan(runs, keep, sample_bytes, {"path": "changed_blocks", "why": "", **info})
