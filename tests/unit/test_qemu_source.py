"""Images read through qemu: what qemu-img says about them is read within bounds."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from stackvault.engine import child
from stackvault.engine.sources import QemuSource, open_source
from stackvault.errors import SourceError

KiB, MiB = 1 << 10, 1 << 20


def test_a_map_too_long_to_keep_reads_the_whole_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fragmented image prints one map line per extent; past the cap the engine reads the disk whole
    (its zero blocks are still found and not stored) instead of keeping an unbounded list."""
    img = tmp_path / "fragmented.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", str(img), str(4 * MiB)],
                   check=True)
    writes = [a for off in range(0, 4 * MiB, 16 * KiB) for a in ("-c", f"write -P 9 {off} 4k")]
    subprocess.run(["qemu-io", "-f", "qcow2", *writes, str(img)], check=True, capture_output=True)
    with open_source(f"qcow2:{img}") as src:
        assert len(src.data_extents()) == 256
        first = src.read(0, 4 * KiB)
    monkeypatch.setattr(child, "MAP", child.Limits(output=4 * KiB))
    with open_source(f"qcow2:{img}") as src:
        assert src.data_extents() == [(0, 4 * MiB)]
        assert src.read(0, 4 * KiB) == first == b"\x09" * 4 * KiB


def test_the_next_export_stops_servers_and_removes_socket_dirs_a_killed_job_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an older version left after a kill: a `qemu-nbd --persistent` still serving, and its
    socket directory. The next source read through qemu removes both."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    img = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), str(MiB)], check=True)
    left = tmp_path / "sv-nbd-k3x9q2za"
    left.mkdir()
    orphan = subprocess.Popen(["qemu-nbd", "--read-only", "--persistent", "-f", "qcow2", "-k", str(left / "s"),
                               str(img)], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (left / "s").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        gone_pid = tmp_path / f"sv-nbd-{2 ** 22 + 7}-abcdefgh"  # a pid above pid_max: its job is gone
        gone_pid.mkdir()
        with open_source(f"qcow2:{img}") as src:
            assert src.read(0, 512) == bytes(512)
            assert orphan.wait(10) is not None, "the orphaned server was stopped"
        assert not left.exists() and not gone_pid.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("sv-nbd-")] == []
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()


def test_a_format_qemu_tools_are_not_asked_for_is_refused(tmp_path: Path) -> None:
    """The format of a Glance image is what its owner says; only image formats reach qemu's driver list."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(MiB))
    for fmt in ("nbd", "host_device", "file", "iso"):
        source = QemuSource(path=str(img), name="vda", key="test", format=fmt)
        with pytest.raises(SourceError, match="image refused: .* has format"):
            source.open()
        source.close()
