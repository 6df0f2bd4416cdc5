"""A stream copied into a file with its zeros left as holes, within a byte budget.

A file extracted from a backed-up disk is the tenant's: it may be a sparse file of terabytes whose
holes libguestfs hands over as zeros. Written as they come, those zeros would fill the proxy's disk.
So every 4 KiB page of zeros becomes a seek (the target's file system keeps it as a hole, as
`cp --sparse=always` does), and the bytes actually written are counted against a `ByteBudget`: the
free space of the target less a margin, or the operator's `--max-bytes`, checked before the first
byte against what the guest's file system says the file occupies. A stream that brings more data
than that (a guest file system that lied about its allocation) is cut off at the budget.
"""

from __future__ import annotations

import os
from typing import IO

from ..errors import ExtractionError
from .fileio import pwrite_all

#: How much is read at once; a whole read of zeros is skipped with one comparison.
READ_SIZE = 1 << 20
#: The unit a hole is kept in: a page, the smallest hole the usual file systems keep.
PAGE = 4096
_ZEROS = bytes(READ_SIZE)


class ByteBudget:
    """The bytes an extraction may still write on this host; `spend` refuses past it."""

    def __init__(self, limit: int, why: str, fix: str) -> None:
        self.limit = limit
        self.spent = 0
        self._why = why
        self._fix = fix

    def spend(self, n: int, what: str) -> None:
        self.spent += n
        if self.spent > self.limit:
            raise ExtractionError(f"{what} brings more data than {self._why} ({self.limit} bytes); "
                                  "the extraction was stopped and removed", self._fix)


def copy_sparse(stream: IO[bytes], fd: int, budget: ByteBudget, what: str) -> int:
    """Everything `stream` holds into `fd` from offset 0, zero pages as holes; the length copied.

    `stream` must return full reads until its end (a buffered reader does)."""
    offset = 0
    while chunk := stream.read(READ_SIZE):
        if chunk != _ZEROS[: len(chunk)]:
            _write_data(fd, memoryview(chunk), offset, budget, what)
        offset += len(chunk)
    os.ftruncate(fd, offset)  # the length, holes at the end included
    return offset


def _write_data(fd: int, chunk: memoryview, offset: int, budget: ByteBudget, what: str) -> None:
    """The runs of pages of `chunk` that are not all zeros, each written with one pwrite."""
    zero_page = memoryview(_ZEROS)[:PAGE]
    start = None
    for at in range(0, len(chunk) + PAGE, PAGE):
        page = chunk[at : at + PAGE]
        data = bool(page) and page != zero_page[: len(page)]
        if data and start is None:
            start = at
        elif not data and start is not None:
            run = chunk[start:at]
            budget.spend(len(run), what)
            pwrite_all(fd, run, offset + start)
            start = None
