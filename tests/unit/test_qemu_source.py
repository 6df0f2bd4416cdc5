"""Images read through qemu: what qemu-img says about them is read within bounds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
    pid_file = tmp_path / "orphan.pid"
    subprocess.run(["sh", "-c", f'qemu-nbd --read-only --persistent -f qcow2 -k "{left / "s"}" "{img}" '
                                f'</dev/null >/dev/null 2>&1 & echo $! > "{pid_file}"'], check=True)
    orphan = int(pid_file.read_text())  # its parent, the shell, is gone: an orphan
    try:
        deadline = time.monotonic() + 10
        while not (left / "s").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        gone_pid = tmp_path / f"sv-nbd-{2 ** 22 + 7}-abcdefgh"  # a pid above pid_max: its job is gone
        gone_pid.mkdir()
        with open_source(f"qcow2:{img}") as src:
            assert src.read(0, 512) == bytes(512)
        deadline = time.monotonic() + 10
        while _running(orphan) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _running(orphan), "the orphaned server was stopped"
        assert not left.exists() and not gone_pid.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("sv-nbd-")] == []
    finally:
        if _running(orphan):
            os.kill(orphan, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_format_qemu_tools_are_not_asked_for_is_refused(tmp_path: Path) -> None:
    """The format of a Glance image is what its owner says; only image formats reach qemu's driver list."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(MiB))
    for fmt in ("nbd", "host_device", "file", "iso"):
        source = QemuSource(path=str(img), name="vda", key="test", format=fmt)
        with pytest.raises(SourceError, match=r"image refused: .* has format"):
            source.open()
        source.close()


def test_a_socket_dir_in_use_by_a_running_older_job_is_left_alone(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    img = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), str(MiB)], check=True)
    in_use = tmp_path / "sv-nbd-k3x9q2za"  # an older version's name: no pid in it
    in_use.mkdir()
    job = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[2:])",
                            "stackvault", "qemu-nbd", "--read-only", "--persistent", "-f", "qcow2",
                            "-k", str(in_use / "s"), str(img)])
    try:
        deadline = time.monotonic() + 10
        while not (in_use / "s").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with open_source(f"qcow2:{img}") as src:
            assert src.read(0, 512) == bytes(512)
        assert (in_use / "s").exists() and job.poll() is None, "a running job's export was touched"
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(job.pid)], check=False)
        job.kill()
        job.wait()
