"""gc removes the temporary files a killed write leaves in a local repository, plain or encrypted, and
nothing else: not an object, not what a planted link points at."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, sha256_file


@dataclass
class PassphraseSv(Stackvault):
    """A user who exports STACKVAULT_PASSPHRASE."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "STACKVAULT_PASSPHRASE": "leftover test passphrase"}


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_gc_deletes_the_temporary_files_of_killed_writes(tmp_path: Path, rng: random.Random, encrypted: bool) -> None:
    sv = (PassphraseSv if encrypted else Stackvault)(tmp_path / "sv")
    sv.run("init", "--block-size", "64KiB", *(["--encrypt"] if encrypted else []))
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    backup_id = sv.backup(src, level="full")["backup_id"]
    objects = sorted(str(p.relative_to(sv.repo)) for p in sv.repo.rglob("*") if p.is_file())

    chunk_dir = next((sv.repo / "chunks").iterdir())
    outside = tmp_path / "not-in-the-repository"
    outside.write_bytes(b"must survive gc")
    leftovers = [chunk_dir / ".tmp-0123456789ab-chunk.tmp", sv.repo / ".tmp-ba9876543210-config.tmp",
                 sv.repo / "indexes" / backup_id / ".tmp-00aa00aa00aa-0.fidx.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a write")
    link = sv.repo / "locks" / ".tmp-1111aaaa2222-lock.tmp"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(outside)

    dry = sv.run("gc", "--dry-run").data
    assert dry["temp_files_deleted"] == 4 and all(p.exists() for p in leftovers), dry
    report = sv.run("gc").data
    assert report["temp_files_deleted"] == 4 and report["chunks_deleted"] == 0, report
    assert not any(p.exists() for p in leftovers) and not link.is_symlink()
    assert outside.read_bytes() == b"must survive gc"
    assert sorted(str(p.relative_to(sv.repo)) for p in sv.repo.rglob("*") if p.is_file()) == objects
    assert sha256_file(sv.restore(backup_id, tmp_path / "out.raw")) == sha256_file(src)
    assert sv.run("verify", "--deep").data["ok"]
