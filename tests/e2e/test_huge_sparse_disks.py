"""A huge, nearly empty disk costs what its data costs: what an operator with a 15 TiB volume holding a
few MiB would check.

Backup (Full and Incremental), restore and verify keep their peak memory under a constant, the
stored block index and the working state stay small, an unchanged region is never read again, and the
restored disk equals the original: its data byte for byte, its holes read as zeros (checked through
the file's map of data and holes, never by reading terabytes).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, measured, write_at

TIB = 1 << 40
BLOCK = 512 << 10
#: Peak RSS of any command here (interpreter and libraries included; some 60-75 MiB measured, while
#: a disk's worth of per-block structures would take gigabytes): docs/performance.md.
RSS_BOUND = 200 * MIB


def data_map(path: Path) -> list[tuple[int, int]]:
    """(offset, end) of the file's data extents, from SEEK_DATA/SEEK_HOLE: everything else is a hole."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, pos))
    finally:
        os.close(fd)
    return out


def digest_of(path: Path, ranges: list[tuple[int, int]]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for start, end in ranges:
            f.seek(start)
            h.update(f.read(end - start))
    return h.hexdigest()


def sparse_disk(path: Path, size: int, rng: random.Random, pieces: int) -> list[tuple[int, int]]:
    """A sparse file of `size` with `pieces` MiB of random data at scattered offsets (one at each end)."""
    try:
        with open(path, "wb") as f:
            f.truncate(size)
    except OSError as exc:  # a file system whose files cannot be that large
        pytest.skip(f"cannot make a {size >> 40} TiB sparse file here: {exc.strerror}")
    offsets = {0, size - MIB, *(rng.randrange(1, size // MIB - 1) * MIB for _ in range(pieces - 2))}
    written = []
    for off in sorted(offsets):
        write_at(path, off, rng.randbytes(MIB))
        written.append((off, off + MIB))
    return written


def check_round_trip(sv: Stackvault, tmp_path: Path, size: int, pieces: int) -> None:
    rng = random.Random(size)
    disk = tmp_path / "disk.raw"
    written = sparse_disk(disk, size, rng, pieces)
    pieces = len(written)
    sv.init(block_size="512KiB")
    src = f"file:{disk}"

    full, rss = measured(sv, "backup", "--source", src, "--level", "full")
    assert full.rc == 0, full.describe()
    assert rss < RSS_BOUND, f"Full of {size >> 40} TiB held {rss >> 20} MiB"
    assert full.data["blocks_total"] == size // BLOCK and full.data["bytes_read"] == pieces * MIB, full.data
    index = sv.repo / "indexes" / full.data["backup_id"] / "0.fidx"
    assert index.stat().st_size < 1 * MIB, f"stored index of {index.stat().st_size} bytes"
    state = sum(p.stat().st_size for p in sv.workdir.rglob("*") if p.suffix in (".sha", ".bmp"))
    assert state < 1 * MIB, f"working state of {state} bytes"

    changed_at = written[len(written) // 2][0] + 1000
    write_at(disk, changed_at, b"changed")
    inc, rss = measured(sv, "backup", "--source", src)
    assert inc.rc == 0, inc.describe()
    assert rss < RSS_BOUND, f"Incremental of {size >> 40} TiB held {rss >> 20} MiB"
    report = inc.data
    assert report["level"] == "incremental" and report["blocks_changed"] == 1, report
    assert report["bytes_read"] == pieces * MIB, "an Incremental read more than the data extents"
    assert report["disks"][0]["blocks_new_chunks"] == 1, report

    target = tmp_path / "restored.raw"
    res, rss = measured(sv, "restore", inc.data["backup_id"], "--to", f"file:{target}")
    assert res.rc == 0, res.describe()
    assert rss < RSS_BOUND, f"restore of {size >> 40} TiB held {rss >> 20} MiB"
    assert target.stat().st_size == size
    restored = data_map(target)
    # Data only where the disk had data (whole blocks of it): everything else is a hole, so zeros.
    blocks_of = lambda ranges: {i for s, e in ranges for i in range(s // BLOCK, -(-e // BLOCK))}  # noqa: E731
    assert blocks_of(restored) <= blocks_of(written), "the restore wrote where the disk had no data"
    assert target.stat().st_blocks * 512 <= pieces * MIB + 4 * BLOCK
    assert digest_of(target, written) == digest_of(disk, written)

    res, rss = measured(sv, "verify")
    assert res.rc == 0 and res.data["ok"], res.describe()
    assert rss < RSS_BOUND, f"verify held {rss >> 20} MiB"


@pytest.mark.slow
def test_a_15_tib_sparse_disk_backs_up_restores_and_verifies_in_bounded_memory(tmp_path: Path) -> None:
    """15 TiB (ext4 files go up to 16 TiB): 31 million blocks, of which 32 hold data."""
    check_round_trip(Stackvault(tmp_path / "sv"), tmp_path, 15 * TIB, pieces=16)
