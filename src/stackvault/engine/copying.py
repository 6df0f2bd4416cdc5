"""Copying one disk's chunks from one repository to another (`stackvault copy`, a second site).

A chunk is moved only when the second repository lacks it, and is never moved unread: it is read
from the first repository (verified against its id, so damage is not copied), then compressed at
the second repository's level and stored there (sealed under its keys, into its packs when it has
them). The two repositories may key their chunk ids differently: an encrypted repository names a
chunk by keyed BLAKE3 under its own master key, a plain one by plain BLAKE3. When the ids differ, a
chunk's id in the second repository is only known from its bytes, so each chunk is rehashed with
the second repository's key, and the block index is rewritten with the new ids.

What was copied before tells a chunk's new id without reading it: the block index of the same disk
in a backup both repositories hold lists, block by block, the first repository's id beside the
second's (`known_ids`). An Incremental copied after its base thus reads only the chunks it changed.
Memory follows one disk: the distinct chunk ids of its index and those of one earlier copy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .blockindex import BlockIndex
from .chunks import encode_chunk
from .presence import ListedChunks
from .repository import Repository
from .window import batched, map_bounded

#: Hashed by both repositories: equal results mean their chunk ids are the same.
_PROBE = b"stackvault: are these repositories' chunk ids keyed alike?"
#: Chunks read in one call (`Repository.iter_blocks` merges neighbours of one pack into one request).
BATCH = 32


def same_chunk_ids(src: Repository, dst: Repository) -> bool:
    """Whether a block has one id in both repositories (both plain, or encrypted under one master key)."""
    return src.hash_block(_PROBE) == dst.hash_block(_PROBE)


def known_ids(src_index: BlockIndex, dst_index: BlockIndex) -> dict[bytes, bytes]:
    """First repository's id -> second's, from the two indexes of one disk in a backup both hold
    (a copy: the same blocks, named twice). Empty when the two do not line up block for block."""
    if (src_index.disk_size, src_index.block_size, src_index.data_count) != \
            (dst_index.disk_size, dst_index.block_size, dst_index.data_count):
        return {}
    ids: dict[bytes, bytes] = {}
    for (i, a), (j, b) in zip(src_index.data_blocks(), dst_index.data_blocks(), strict=True):
        if i != j:
            return {}
        ids[a] = b
    return ids


@dataclass
class CopyStats:
    """What copying moved: `chunks_sent` (and their `bytes_sent`, as stored in the second repository)
    were missing there; `chunks_held` were there already; `chunks_read` were read from the first."""

    chunks_sent: int = 0
    bytes_sent: int = 0
    chunks_held: int = 0
    chunks_read: int = 0

    def add(self, other: CopyStats) -> None:
        self.chunks_sent += other.chunks_sent
        self.bytes_sent += other.bytes_sent
        self.chunks_held += other.chunks_held
        self.chunks_read += other.chunks_read


class DiskCopy:
    """The chunks of one disk's index made present in `dst`; `run` returns the index as `dst` names them."""

    def __init__(self, src: Repository, dst: Repository, known: dict[bytes, bytes], workers: int,
                 progress: Callable[[int], Callable[[int], None]] | None = None) -> None:
        """`progress`, given the bytes of the disk's distinct chunks, returns the callback told of each
        chunk's bytes as it is found in `dst` or sent there."""
        self.src, self.dst = src, dst
        self.same = same_chunk_ids(src, dst)
        self.known = {} if self.same else dict(known)
        self.workers = max(1, workers)
        self._progress_for = progress
        self.progress: Callable[[int], None] | None = None
        self.stats = CopyStats()
        self._lock = threading.Lock()
        # A format 3 repository answers "do you hold it" by listing (engine/presence.py); a packed
        # one from its chunk index in memory.
        self._listed = None if dst.packed else ListedChunks(dst)

    def _held(self, digest: bytes) -> bool:
        return self._listed.has(digest) if self._listed is not None else self.dst.has_chunk(digest)

    def run(self, index: BlockIndex) -> BlockIndex:
        lengths: dict[bytes, int] = {}
        for i, digest in index.data_blocks():
            lengths.setdefault(digest, index.block_length(i))
        if self._progress_for is not None:
            self.progress = self._progress_for(sum(lengths.values()))
        to_read: list[tuple[bytes, int]] = []
        for digest, length in lengths.items():
            ours = digest if self.same else self.known.get(digest)
            if ours is not None and self._held(ours):
                self.stats.chunks_held += 1
                if self.progress:
                    self.progress(length)
            else:
                to_read.append((digest, length))
        if self.src.packed:  # in pack order: a batch's neighbours in one pack come with one ranged read
            to_read.sort(key=self._place)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="sv-copy") as pool:
            for _ in map_bounded(pool, self._send, batched(to_read, BATCH), 2 * self.workers):
                pass
        return index.with_digests(None if self.same else self.known.__getitem__)

    def _place(self, item: tuple[bytes, int]) -> tuple[bytes, int]:
        loc = self.src.chunk_location(item[0])
        return (loc.pack_id, loc.offset) if loc is not None else (b"", 0)

    def _send(self, batch: list[tuple[bytes, int]]) -> None:
        """Read a batch of chunks from `src`; store in `dst` those it lacks."""
        for k, data in self.src.iter_blocks([(k, digest, length) for k, (digest, length) in enumerate(batch)]):
            digest = batch[k][0]
            ours = digest if self.same else self.dst.hash_block(data)
            held = self._held(ours)
            stored = 0
            if not held:
                blob = encode_chunk(data, self.dst.config.compression_level)
                self.dst.put_chunk(ours, blob)
                if self._listed is not None:
                    self._listed.note(ours)
                stored = len(blob)
            with self._lock:
                if not self.same:
                    self.known[digest] = ours
                self.stats.chunks_read += 1
                self.stats.chunks_held += held
                self.stats.chunks_sent += not held
                self.stats.bytes_sent += stored
            if self.progress:
                self.progress(len(data))
