"""A repository and working state written before sparse block indexes (repository format 1, dense
`SVFIDX01` indexes, `SVBMP001` bitmaps) go on working: their backups restore, the next Incremental
builds on their working state without rebuilding it, and the first sparse index raises the repository
to format 3, so that an older stackvault refuses it in one line instead of calling its indexes damaged.

The older bytes are made here from the documented layouts (docs/repository-format.md), as those
versions wrote them: nothing imports the engine.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import blake3
import zstandard

from .helpers import MIB, Stackvault, change_blocks, make_sparse_image, sha256_file

BLOCK = 64 << 10


def checksum(doc: dict) -> str:
    """The config's and record's `checksum`: BLAKE3 of the canonical JSON of every other field."""
    rest = {k: v for k, v in doc.items() if k != "checksum"}
    return blake3.blake3(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rewrite_json(path: Path, **fields: object) -> dict:
    doc = json.loads(path.read_bytes())
    doc.update(fields)
    doc["checksum"] = checksum(doc)
    path.write_text(json.dumps(doc, indent=1))
    return doc


def dense_digests(sparse: bytes) -> bytes:
    """The digests of every block (zeros for a zero block) of an SVFIDX02 index."""
    (magic, _bs, _r, _size, blocks, _bid, nruns, ndata, body_sum), body = (
        struct.unpack("<8sII QQ 48s QQ 32s", sparse[:128]), zstandard.ZstdDecompressor().decompress(sparse[144:]))
    assert magic == b"SVFIDX02" and blake3.blake3(body).digest() == body_sum and len(body) == 16 * nruns + 32 * ndata
    dense, at = bytearray(32 * blocks), 16 * nruns
    for r in range(nruns):
        start, count = struct.unpack_from("<QQ", body, 16 * r)
        dense[32 * start : 32 * (start + count)] = body[at : at + 32 * count]
        at += 32 * count
    return bytes(dense)


def v1_index(disk_size: int, backup_id: str, dense: bytes) -> bytes:
    """An SVFIDX01 index, as the versions before format 3 wrote it."""
    head = struct.pack("<8sII QQ 48s 32s", b"SVFIDX01", BLOCK, 0, disk_size, len(dense) // 32,
                       backup_id.encode(), blake3.blake3(dense).digest())
    return head + blake3.blake3(head).digest()[:16] + dense


def v1_bitmap(disk_size: int, full_id: str, backup_id: str) -> bytes:
    """An SVBMP001 change bitmap with no block changed (what a Full leaves)."""
    blocks = -(-disk_size // BLOCK)
    head = struct.pack("<8sII QQ 48s 48s", b"SVBMP001", BLOCK, 0, disk_size, blocks, full_id.encode(),
                       backup_id.encode())
    bits = bytes(-(-blocks // 8))
    return head + blake3.blake3(head + bits).digest()[:16] + bits


def as_format_1(sv: Stackvault, backup_id: str, disk_size: int) -> None:
    """Turn a repository with one backup, and its working state, into what format 1 had written."""
    config = sv.repo / "config"
    doc = json.loads(config.read_bytes())
    assert doc["version"] == 3, doc
    rewrite_json(config, version=1)
    index = sv.repo / "indexes" / backup_id / "0.fidx"
    dense = dense_digests(index.read_bytes())
    old = v1_index(disk_size, backup_id, dense)
    for path in (index, *sv.workdir.rglob("*.sha")):
        path.write_bytes(old)
    (bmp,) = sv.workdir.rglob("*.bmp")
    bmp.write_bytes(v1_bitmap(disk_size, backup_id, backup_id))
    record = sv.repo / "backups" / f"{backup_id}.json"
    rec = json.loads(record.read_bytes())
    rec["disks"][0]["index_checksum"] = blake3.blake3(dense).hexdigest()
    rewrite_json(record, disks=rec["disks"])


def test_a_format_1_repository_restores_and_takes_sparse_incrementals(sv: Stackvault, tmp_path: Path) -> None:
    rng = random.Random(7)
    size = 4 * MIB
    disk = make_sparse_image(tmp_path / "disk.raw", size, rng,
                             [(0, 3 * BLOCK, "random"), (MIB, 200_000, "text"), (3 * MIB, BLOCK, "random")])
    sv.init()
    first = sv.backup(disk, level="full")["backup_id"]
    original = sha256_file(disk)
    as_format_1(sv, first, size)
    sv.run("catalog", "rebuild")

    assert sha256_file(sv.restore(first, tmp_path / "first.raw")) == original
    change_blocks(disk, [1, 17], rng)
    report = sv.backup(disk)
    assert report["status"] == "success" and report["warnings"] == [], "the older working state was used as it is"
    assert report["level"] == "incremental" and report["blocks_changed"] == 2, report
    assert json.loads((sv.repo / "config").read_bytes())["version"] == 3
    second = sv.repo / "indexes" / report["backup_id"] / "0.fidx"
    assert second.read_bytes()[:8] == b"SVFIDX02"
    assert (sv.repo / "indexes" / first / "0.fidx").read_bytes()[:8] == b"SVFIDX01"
    assert sv.run("verify").data["ok"]
    assert sha256_file(sv.restore(report["backup_id"], tmp_path / "second.raw")) == sha256_file(disk)
    assert sha256_file(sv.restore(first, tmp_path / "first-again.raw")) == original


def test_a_reader_of_format_2_says_upgrade_once_a_sparse_index_was_written(sv: Stackvault, tmp_path: Path) -> None:
    """What a stackvault from before sparse indexes does with a repository this version wrote to."""
    sv.init()
    sv.backup(make_sparse_image(tmp_path / "disk.raw", MIB, random.Random(1), [(0, BLOCK, "random")]))
    code = ("import sys; import stackvault.engine.repository as r; r.FORMAT_VERSION = 2; "
            "from stackvault.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["--repo", str(sv.repo), "--workdir", str(sv.workdir), "--catalog", sv.catalog_url, "list"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=sv.env(),
                          timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "upgrade stackvault" in proc.stderr and "version 3" in proc.stderr, proc.stderr
