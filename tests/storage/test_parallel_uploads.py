"""Uploads to an object store run in parallel: each PUT waits tens of milliseconds on the store.

On the local Swift, over S3 and over the Swift API: the backend takes PUTs from many threads at
once (every object lands with its own bytes), and a Full through the engine keeps several PUTs in
flight, counted in a wrapper around the backend. How much that buys depends on the store (a
saturated one-process Swift on two shared cores gains little, docs/storage.md); the timings are
printed, not asserted (`make bench-storage` measures them).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from stackvault.engine.pipeline import DiskBackup
from stackvault.engine.repository import Repository
from stackvault.engine.sources import RawSource
from stackvault.engine.state import DiskBase
from stackvault.storage import open_backend
from stackvault.storage.base import BackendWrapper

from .conftest import unique_name

PUTS, THREADS = 32, 8
BLOCK = 256 << 10


class InFlight(BackendWrapper):
    """Counts the PUTs running at the same moment."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self.now = self.peak = 0

    def put(self, key: str, data) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            super().put(key, data)
        finally:
            with self._lock:
                self.now -= 1


@pytest.mark.parametrize("scheme", ["s3", "swift"])
def test_concurrent_puts_land_and_a_full_keeps_several_in_flight(request, scheme: str, tmp_path,
                                                                 record_property) -> None:
    request.getfixturevalue("s3_env" if scheme == "s3" else "tempauth_env")
    backend = open_backend(f"{scheme}://{unique_name('par')}/p")
    backend.create()
    bodies = [os.urandom(BLOCK) for _ in range(PUTS)]

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: backend.put(f"par/{i}", bodies[i]), range(PUTS)))
    parallel = (time.monotonic() - started) / PUTS
    assert all(backend.get(f"par/{i}") == bodies[i] for i in range(PUTS))

    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(64 * BLOCK))
    source = RawSource(path=str(image), name="disk", key="disk", format="raw", meta={})
    source.open()
    counted = InFlight(backend)
    repo = Repository.init(counted, BLOCK)
    run = DiskBackup(repo, source, "full", DiskBase(), "20261201T000000000Z-cccccc", workers=backend.parallel_calls)
    started = time.monotonic()
    run.run()
    full_s = time.monotonic() - started
    assert run.stats.blocks_new_chunks == 64

    line = (f"{scheme}: {PUTS} PUTs of {BLOCK >> 10} KiB from {THREADS} threads {parallel * 1000:.0f} ms each; "
            f"a Full of 64 blocks {full_s:.2f} s with up to {counted.peak} PUTs in flight")
    print(line)
    record_property("timing", line)
    assert counted.peak >= 2, line
