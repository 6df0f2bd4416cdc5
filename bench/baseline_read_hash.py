"""Baseline: read every non-hole byte of an image and BLAKE3-hash it block by block.

This is the floor for an incremental backup of a raw image: a block engine cannot know what changed
without reading and hashing the data (there is no changed-block tracking for a plain file), so an
incremental within 2x of this is doing little besides. One thread, buffered reads, SEEK_DATA /
SEEK_HOLE to skip holes, one hash per block like the engine: what stackvault's engine must do at
the least. Prints one JSON line: bytes read, blocks hashed.
"""

from __future__ import annotations

import json
import os
import sys

import blake3


def read_and_hash(path: str, block_size: int) -> dict:
    buf = bytearray(block_size)
    view = memoryview(buf)
    read = blocks = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            # Hash whole blocks, as the engine does: a block partly in a hole is read from its start.
            start -= start % block_size
            while start < end:
                n = os.preadv(fd, [view[:min(block_size, size - start)]], start)
                blake3.blake3(view[:n]).digest()
                read += n
                blocks += 1
                start += n
            pos = start
    finally:
        os.close(fd)
    return {"bytes_read": read, "blocks": blocks}


if __name__ == "__main__":
    print(json.dumps(read_and_hash(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20)))
