"""The changed-block read plan: which blocks an Incremental must read when the source lists its changes.

A source that keeps snapshots (an RBD image) can list the extents written since the snapshot an earlier
backup was read from. Only the blocks those extents touch are read and hashed; every other block keeps
the digest the earlier backup's index holds, so the new index is still complete (a synthetic full)
while the disk is read only where it changed. Blocks wholly inside a discarded extent are zeros and
are not read either.

The list is trusted, but checked: a random sample of the blocks it calls unchanged is read anyway
and compared with the earlier index, and a few of those it calls discarded are read and must be
zeros. One mismatch and the plan is dropped: the disk is read in full,
with a warning, because a list that missed one block may have missed others.

Memory stays flat: one byte per block (the plan), whatever the number of extents.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .blockindex import ZERO_DIGEST, BlockIndex, block_count

#: What the pipeline does with a block: ZERO (no data: not read), READ, KEEP (take the earlier digest).
ZERO, READ, KEEP = 0, 1, 2
#: The fewest unchanged blocks a sample checks, when the disk has that many.
MIN_SAMPLE = 8

Reader = Callable[[int, int], bytes]
Hasher = Callable[[bytes], bytes]


@dataclass
class ReadPlan:
    """Per block ZERO, READ or KEEP; `keep` holds the digests of the KEEP blocks."""

    blocks: bytearray
    keep: BlockIndex
    bytes_read: int = 0  # by the sample, before the pipeline runs
    info: dict = field(default_factory=dict)


def full_read(why: str, **info: object) -> dict:
    """The `read` report of a disk read in full, and why."""
    return {"path": "full_read", "why": why, **info}


def mark_extent(blocks: bytearray, block_size: int, size: int, offset: int, length: int, exists: bool) -> None:
    """Mark the blocks one changed extent touches: READ, or ZERO for blocks wholly inside a discarded
    one (extents of one listing never overlap, so such a block holds nothing else)."""
    end = min(offset + length, size)
    if length <= 0 or offset >= end:
        return
    first, last = offset // block_size, (end - 1) // block_size
    if exists:
        blocks[first : last + 1] = bytes([READ]) * (last + 1 - first)
        return
    whole_first = -(-offset // block_size)
    whole_last = (end // block_size if end < size else block_count(size, block_size)) - 1
    for i in (first, last):  # partly discarded: the rest of the block may hold data
        if not whole_first <= i <= whole_last:
            blocks[i] = READ
    if whole_first <= whole_last:
        blocks[whole_first : whole_last + 1] = bytes([ZERO]) * (whole_last + 1 - whole_first)


def pick_sample(blocks: bytearray, share: float, rng: random.Random, kind: int = KEEP) -> list[int]:
    """Distinct blocks of one kind (KEEP, or ZERO), in disk order: `share` of them, at least MIN_SAMPLE
    (or all there are)."""
    if share <= 0:
        return []
    total = blocks.count(kind)
    want = min(total, max(MIN_SAMPLE, math.ceil(total * share)))
    if want == total or total * 4 < len(blocks):  # all of them, or too few to be found by chance
        found = _positions(blocks, kind)
        return found if want == total else sorted(rng.sample(found, want))
    chosen: set[int] = set()
    while len(chosen) < want:  # the kind is a large share of the blocks: a few tries each
        i = rng.randrange(len(blocks))
        if blocks[i] == kind:
            chosen.add(i)
    return sorted(chosen)


def _positions(blocks: bytearray, kind: int) -> list[int]:
    found, i = [], blocks.find(kind)
    while i >= 0:
        found.append(i)
        i = blocks.find(kind, i + 1)
    return found


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
    blocks = bytearray([KEEP]) * block_count(size, bs)
    started = time.monotonic()
    why = source.changed_extents(base_meta, lambda off, n, exists: mark_extent(blocks, bs, size, off, n, exists))
    listing_s = round(time.monotonic() - started, 4)
    if why:
        return full_read(why)
    base_snapshot = base_meta["rbd"]["snapshot"]
    listed = len(blocks) - blocks.count(KEEP)
    rng = rng or random.Random()
    # blocks said to be discarded are checked too: a listing that wrongly says so would lose data
    zeros = pick_sample(blocks, share, rng, ZERO)
    sample = sorted(pick_sample(blocks, share, rng) + zeros)
    missed = sample_mismatches(sample, keep, source.read, hash_block, frozenset(zeros))
    info = {"base_snapshot": base_snapshot, "blocks_listed": listed, "listing_s": listing_s,
            "sample_blocks": len(sample), "sample_zero_blocks": len(zeros), "sample_mismatches": missed}
    sample_bytes = sum(keep.block_length(i) for i in sample)
    if missed:
        return full_read(f"changed-block list missed {missed} of {len(sample)} sampled blocks",
                         sample_bytes=sample_bytes, **info)
    return ReadPlan(blocks, keep, sample_bytes, {"path": "changed_blocks", "why": "", **info})
