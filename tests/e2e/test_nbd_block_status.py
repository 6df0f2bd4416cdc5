"""`serve-nbd` answers NBD_CMD_BLOCK_STATUS (`base:allocation`) from the block index: `qemu-img map`
of the export shows the backup's data where it is and holes elsewhere, and `qemu-img convert`, which
then reads only the data (in structured replies), still writes the disk's exact bytes."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

from .helpers import BLOCK, KIB, MIB, Stackvault, make_sparse_image, sha256_file
from .test_nbd_export import exported

SIZE = 48 * MIB
EXTENTS = [(0, 200 * KIB), (9 * MIB + 5 * KIB, 300 * KIB), (30 * MIB, 2 * MIB)]


def _blocks(start: int, length: int) -> tuple[int, int]:
    return start // BLOCK * BLOCK, -(-(start + length) // BLOCK) * BLOCK


def test_block_status_shows_data_and_holes(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    disk = make_sparse_image(tmp_path / "d.raw", SIZE, rng, [(a, n, "random") for a, n in EXTENTS])
    bid = repo.backup(disk)["backup_id"]
    sock = tmp_path / "nbd.sock"
    with exported(repo, bid, sock):
        uri = f"nbd+unix:///?socket={sock}"
        mapped = json.loads(subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", uri],
                                           capture_output=True, text=True, check=True, timeout=120).stdout)
        data = [(e["start"], e["start"] + e["length"]) for e in mapped if e["data"]]
        assert data == [_blocks(a, n) for a, n in EXTENTS], mapped
        assert all(e["zero"] for e in mapped if not e["data"]), "holes read as zeros"
        out = tmp_path / "copy.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out)], check=True, timeout=120)
    assert sha256_file(out) == sha256_file(disk)
    assert out.stat().st_blocks * 512 <= 4 * MIB, "the copy skipped the holes"
