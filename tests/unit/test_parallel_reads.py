"""A raw disk is read by several threads at once (a disk is fast only with a queue of reads), a stream
only in order by one, and both give the same block index.

What a user would check: the index is the same whichever way the disk was read, and a source that
can only be read in order (a Glance download, an NBD socket) is never read out of order.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from stackvault.engine.pipeline import DiskBackup
from stackvault.engine.repository import Repository
from stackvault.engine.sources import RawSource
from stackvault.engine.state import DiskBase
from stackvault.storage.memory import MemoryBackend

BLOCK = 64 << 10


class WatchedRaw(RawSource):
    """A raw file that records how many of its reads overlap and in what order they came."""

    def open(self) -> None:
        super().open()
        self.offsets: list[int] = []
        self.peak = self._now = 0
        self._guard = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        with self._guard:
            self._now += 1
            self.peak = max(self.peak, self._now)
            self.offsets.append(offset)
        time.sleep(0.002)  # a disk's latency, so that overlapping reads have a chance to overlap
        try:
            return super().read(offset, length)
        finally:
            with self._guard:
                self._now -= 1


class WatchedStream(WatchedRaw):
    parallel_reads = False


def _full(path: Path, cls: type[WatchedRaw]) -> tuple[bytes, WatchedRaw]:
    source = cls(path=str(path), name="disk", key="disk", format="raw", meta={})
    source.open()
    try:
        repo = Repository.init(MemoryBackend(), BLOCK)
        index, _ = DiskBackup(repo, source, "full", DiskBase(), "20261201T000000000Z-aaaaaa", workers=2).run()
    finally:
        source.close()
    return index.to_bytes(), source


def test_raw_reads_overlap_streams_do_not_and_the_index_is_the_same(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    with open(path, "wb") as f:
        f.truncate(32 << 20)
        for at in range(0, 32 << 20, 3 << 20):  # data with holes between
            f.seek(at)
            f.write(os.urandom(1 << 20))
    raw_index, raw = _full(path, WatchedRaw)
    stream_index, stream = _full(path, WatchedStream)
    assert raw_index == stream_index
    assert raw.peak >= 2, "a raw disk was read one block at a time"
    assert stream.peak == 1 and stream.offsets == sorted(stream.offsets)
    assert sorted(raw.offsets) == stream.offsets, "both read exactly the blocks holding data"
