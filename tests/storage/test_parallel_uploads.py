"""Uploads to an object store must run in parallel: each 1 MiB PUT waits on the store.

Measures sequential against parallel 1 MiB PUTs through the backend (retry wrapper included) on
the local Swift, over S3 and over the Swift API, and prints the numbers (docs/storage.md quotes
them). The assertion is only that parallel is faster: the machine is shared, the ratio varies.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from stackvault.storage import open_backend

from .conftest import unique_name

PUTS, THREADS = 32, 8


@pytest.mark.parametrize("scheme", ["s3", "swift"])
def test_parallel_puts_beat_sequential(request, scheme: str, record_property) -> None:  # noqa: ANN001
    request.getfixturevalue("s3_env" if scheme == "s3" else "tempauth_env")
    backend = open_backend(f"{scheme}://{unique_name('par')}/p")
    backend.create()
    body = os.urandom(1 << 20)
    backend.put("warm-up", body)

    started = time.monotonic()
    for i in range(PUTS):
        backend.put(f"seq/{i}", body)
    sequential = (time.monotonic() - started) / PUTS

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: backend.put(f"par/{i}", body), range(PUTS)))
    parallel = (time.monotonic() - started) / PUTS

    line = (f"{scheme}: 1 MiB PUT {sequential * 1000:.0f} ms each sequentially, "
            f"{parallel * 1000:.0f} ms each with {THREADS} threads ({sequential / parallel:.1f}x)")
    print(line)
    record_property("timing", line)
    assert len(list(backend.list("par/"))) == PUTS
    assert parallel < sequential, line
