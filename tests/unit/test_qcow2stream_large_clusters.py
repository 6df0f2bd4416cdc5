"""qcow2 images of 2 MiB clusters stream like any other: one of their L2 tables maps 262,144
clusters, all of them awaited once the table has passed, and a fixed cap of 65,536 refused such
legitimate images partway through the download, with no fallback. The cap is one L2 table's worth
of clusters plus a margin; memory stays bounded per awaited cluster, and past the cap an image is
still refused."""

from __future__ import annotations

import subprocess
import time
import tracemalloc
from pathlib import Path

import pytest
from test_hostile_qcow2stream import COPIED, KiB, MiB, bounded, image, l2, read_all

from stackvault.engine.qcow2stream import HEAD_SIZE, ImageRefused, Qcow2StreamSource, max_awaited

CLUSTER = 2 * MiB


def _qemu(*args: str | Path) -> None:
    done = subprocess.run(list(map(str, args)), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, args))}: {done.stderr.strip()}"


def test_an_image_of_2m_clusters_mapping_many_clusters_ahead_streams(tmp_path: Path) -> None:
    """qemu-img's metadata preallocation writes every L2 table before any data: 70,000 clusters
    (140 GiB, a sparse file here) are mapped ahead of their data, more than the old cap."""
    img = tmp_path / "big.qcow2"
    _qemu("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M,preallocation=metadata", img, "140G")
    _qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 4M", img)
    assert 70000 > 1 << 16
    tracemalloc.start()
    started = time.monotonic()
    try:
        with open(img, "rb") as f:
            source = Qcow2StreamSource(path=str(img), name=img.name, key="test")
            source.open(f, f.read(HEAD_SIZE), tmpdir=str(tmp_path), memory_limit=16 * MiB)
            try:
                assert source.data_extents() == [(0, 140 << 30)]
                assert source.read(0, 4 * MiB) == b"\x5a" * (4 * MiB)
                assert source.read(4 * MiB, 2 * MiB) == bytes(2 * MiB)
            finally:
                source.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB + 70000 * 600, f"{peak} bytes"
    assert time.monotonic() - started < 60


@pytest.mark.slow  # a large mapped image, memory traced
def test_2m_clusters_mapped_past_the_cap_are_refused_in_bounded_memory() -> None:
    """Two L2 tables of 2 MiB clusters mapping data far ahead: 524,288 clusters awaited, unless refused."""
    cs, per_l2 = CLUSTER, CLUSTER // 8
    tables = {(2 + i) * cs: l2([COPIED | (0x100_0000_0000 + (i * per_l2 + j) * cs) for j in range(per_l2)], cs)
              for i in range(2)}
    data = image(2 * cs * per_l2, [COPIED | off for off in tables], tables, cluster_bits=21)
    assert max_awaited(cs) < 2 * per_l2
    outcome, peak, took = bounded(read_all, data)
    assert isinstance(outcome, ImageRefused) and "ahead of their data" in str(outcome), outcome
    assert peak < len(data) + max_awaited(cs) * 600, f"{peak} bytes for a {len(data)}-byte image"
    assert took < 120


def test_the_cap_for_64k_clusters_stays_near_what_it_was() -> None:
    """~25 MiB of bookkeeping for the default cluster size, as before."""
    assert 1 << 16 <= max_awaited(64 * KiB) < 80000
