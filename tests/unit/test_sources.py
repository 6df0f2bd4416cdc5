"""Sources read what the guest sees: raw holes are skipped, qcow2 is read by guest offsets."""

import os
import subprocess

import pytest

from stackvault.engine.sources import open_source
from stackvault.errors import SourceError

MiB = 1 << 20


@pytest.fixture
def sparse_raw(tmp_path):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(8 * MiB)
        f.write(os.urandom(MiB))
        f.seek(40 * MiB)
        f.write(b"x" * (2 * MiB))
    return path


def test_raw_extents_skip_holes(sparse_raw):
    with open_source(f"file:{sparse_raw}") as src:
        assert src.format == "raw" and src.size == 64 * MiB
        extents = src.data_extents()
        covered = sum(length for _, length in extents)
        assert covered <= 4 * MiB  # file systems may round to their block size
        assert any(off <= 8 * MiB < off + length for off, length in extents)
        assert src.read(40 * MiB, 4) == b"xxxx"


def test_qcow2_is_read_by_guest_offsets(sparse_raw, tmp_path):
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(sparse_raw), str(qcow)], check=True)
    with open(sparse_raw, "rb") as f:
        f.seek(8 * MiB)
        expected = f.read(MiB)
    with open_source(f"qcow2:{qcow}") as src:
        assert src.format == "qcow2" and src.size == 64 * MiB
        assert src.read(8 * MiB, MiB) == expected
        assert sum(length for _, length in src.data_extents()) < 8 * MiB


@pytest.mark.parametrize("spec,message", [
    ("file:/nonexistent/disk.img", "cannot open source /nonexistent/disk.img"),
    ("floppy:/x", "unknown source kind 'floppy'"),
])
def test_bad_sources_are_named(spec, message):
    with pytest.raises(SourceError, match=message):
        open_source(spec)


def test_directory_is_not_a_disk(tmp_path):
    with pytest.raises(SourceError, match="is a directory"):
        open_source(f"raw:{tmp_path}")
