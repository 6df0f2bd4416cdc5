"""qcow2 sources as clouds leave them: compressed clusters, and overlays on a backing file (Nova's disks).

The engine must back up the guest's view of the disk, which includes the backing chain when the
operator names the source `qcow2+backing:`; the restore is compared with what `qemu-img convert`
says the guest sees.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from .helpers import (
    BLOCK,
    KIB,
    MIB,
    Stackvault,
    make_sparse_image,
    qcow2_guest_sha256,
    qemu_img,
    sha256_file,
)


def _qemu_io_write(image: Path, offset: int, length: int, pattern: int) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} {offset} {length}", str(image)],
                   check=True, capture_output=True, timeout=60)


@pytest.fixture
def base_raw(tmp_path: Path, rng: random.Random) -> Path:
    return make_sparse_image(tmp_path / "base.raw", 16 * MIB, rng, [
        (0, 2 * MIB, "random"), (5 * MIB, 2 * MIB, "text"), (12 * MIB, 512 * KIB, "random"),
    ])


def test_compressed_qcow2(repo: Stackvault, tmp_path: Path, base_raw: Path) -> None:
    qcow = tmp_path / "compressed.qcow2"
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", str(base_raw), str(qcow))
    bid = repo.backup(f"qcow2:{qcow}", level="full")["backup_id"]
    out = repo.restore(bid, tmp_path / "out.raw")
    assert sha256_file(out) == sha256_file(base_raw)


def test_qcow2_overlay_on_a_backing_file(repo: Stackvault, tmp_path: Path, base_raw: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(base_raw), str(base))
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay))
    _qemu_io_write(overlay, 1 * MIB, 256 * KIB, 0xAB)        # over base data
    _qemu_io_write(overlay, 9 * MIB + 4096, 8192, 0xCD)      # over a base hole
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -z {12 * MIB} {64 * KIB}", str(overlay)],
                   check=True, capture_output=True, timeout=60)  # zeroes over base data
    want = qcow2_guest_sha256(overlay, tmp_path / "check")
    assert want != sha256_file(base_raw)

    full = repo.backup(f"qcow2+backing:{overlay}", level="full")
    assert full["disks"][0]["size"] == 16 * MIB, full
    out = repo.restore(full["backup_id"], tmp_path / "out.raw")
    assert sha256_file(out) == want, "the backup must hold the guest's view: overlay over its backing file"

    # the guest writes more; the incremental finds exactly those blocks
    _qemu_io_write(overlay, 3 * MIB, BLOCK, 0x11)
    inc = repo.backup(f"qcow2+backing:{overlay}", level="incremental")
    assert inc["blocks_changed"] == 1, inc
    out.unlink()
    repo.restore(inc["backup_id"], out)
    assert sha256_file(out) == qcow2_guest_sha256(overlay, tmp_path / "check")
