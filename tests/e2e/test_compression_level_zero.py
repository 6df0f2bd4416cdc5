"""Compression level 0 means "store blocks uncompressed", from `init` and from the config file.

Repositories and config files made with level 0 exist; refusing it stopped every command of those
setups. Negative levels and levels above 22 stay refused (tests/e2e/test_hostile_values.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .helpers import BLOCK, MIB, Stackvault, make_random_image, sha256_file


def _backup_and_restore(sv: Stackvault, tmp_path: Path) -> None:
    # text compresses to a small part of its size: stored uncompressed, every byte of it is kept
    src = tmp_path / "d.img"
    text = b"".join((f"block {i} ".encode() * 8192)[:BLOCK] for i in range(8))
    src.write_bytes(text + make_random_image(tmp_path / "r.img", MIB // 2, random.Random(5)).read_bytes())
    bid = sv.backup(src)["backup_id"]
    assert sha256_file(sv.restore(bid, tmp_path / "out.img")) == sha256_file(src)
    stored = sum(p.stat().st_size for p in (sv.repo / "chunks").rglob("*") if p.is_file())
    assert stored >= MIB, "level 0 must store blocks as they are"


def test_init_takes_level_zero_as_no_compression(sv: Stackvault, tmp_path: Path) -> None:
    res = sv.run("init", "--block-size", "64KiB", "--compression-level", "0")
    assert res.rc == 0, res.describe()
    assert json.loads((sv.repo / "config").read_bytes())["compression_level"] == 0
    _backup_and_restore(sv, tmp_path)


def test_a_config_file_with_level_zero_still_works(sv: Stackvault, tmp_path: Path) -> None:
    cfg = tmp_path / "stackvault.toml"
    cfg.write_text("compression_level = 0\n")
    res = sv.run("init", "--block-size", "64KiB", globals_=["--config", str(cfg)])
    assert res.rc == 0, res.describe()
    assert json.loads((sv.repo / "config").read_bytes())["compression_level"] == 0
    res = sv.run("list", globals_=["--config", str(cfg)])
    assert res.rc == 0 and not res.error_lines(), res.describe()
