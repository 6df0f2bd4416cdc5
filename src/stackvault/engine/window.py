"""Running one function over many items on a thread pool with a bounded number in flight.

`ThreadPoolExecutor.map` submits every item before it yields the first result: restoring a 2 TiB disk
of 512 KiB blocks would queue four million futures (gigabytes of them) before writing a byte. Restore
and verify walk every block or chunk of a disk, so they keep a window of at most `limit` futures and
submit the next item only when the oldest has finished: memory stays independent of the disk's size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_bounded(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], limit: int) -> Iterator[R]:
    """Results of `fn` over `items` in order, with at most `limit` calls submitted and not yet collected.

    The first exception re-raises from the generator, as `Executor.map` does; the futures still queued
    are cancelled, so a failed restore stops promptly instead of draining the whole disk."""
    window: deque[Future[R]] = deque()
    try:
        for item in items:
            if len(window) >= limit:
                yield window.popleft().result()
            window.append(pool.submit(fn, item))
        while window:
            yield window.popleft().result()
    finally:
        for fut in window:
            fut.cancel()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter), taken lazily: a worker's share of a run
    of neighbouring blocks (itertools.batched is not in Python 3.11)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
