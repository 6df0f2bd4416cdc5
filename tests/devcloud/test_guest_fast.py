"""Fast mode: servers are disk files without a VM, with the same Hypervisor interface and errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devcloud.guest.hypervisor import DiskSpec, GuestError, Hypervisor, QuiesceError

UUID = "0f000000-0000-4000-8000-000000000001"


@pytest.fixture
def hv(tmp_path: Path) -> Hypervisor:
    return Hypervisor(tmp_path / "state", fast=True)


def raw_disk(path: Path, content: bytes = b"", size: int = 4 * 1024 * 1024) -> Path:
    with open(path, "wb") as disk:
        disk.truncate(size)
        disk.write(content)
    return path


def test_lifecycle_without_a_vm(hv: Hypervisor, tmp_path: Path) -> None:
    root = raw_disk(tmp_path / "root.raw")
    hv.create(UUID, disks=[DiskSpec(root, "raw", "vda")], agent_channel=True, memory_mb=256, vcpus=1)
    assert hv.is_running(UUID)
    hv.stop(UUID)
    assert not hv.is_running(UUID)
    hv.start(UUID)
    assert hv.is_running(UUID)
    with pytest.raises(GuestError, match="already defined"):
        hv.create(UUID, disks=[DiskSpec(root, "raw", "vda")], agent_channel=True, memory_mb=256, vcpus=1)
    hv.destroy(UUID)
    assert root.exists()  # disks belong to the caller
    with pytest.raises(GuestError, match="not defined"):
        hv.is_running(UUID)


@pytest.mark.parametrize(
    ("agent_channel", "agent_running", "error"),
    [
        (True, True, None),
        (True, False, "QEMU guest agent is not connected"),
        (False, True, "QEMU guest agent is not configured"),
    ],
)
def test_quiesce_follows_channel_and_agent(hv: Hypervisor, tmp_path: Path, agent_channel: bool,
                                           agent_running: bool, error: str | None) -> None:
    hv.create(UUID, disks=[DiskSpec(raw_disk(tmp_path / "root.raw"), "raw", "vda")], agent_channel=agent_channel,
              memory_mb=256, vcpus=1, fast_agent_running=agent_running)
    assert hv.agent_available(UUID) is (error is None)
    if error is None:
        hv.quiesce(UUID)
    else:
        with pytest.raises(QuiesceError, match=error):
            hv.quiesce(UUID)
    hv.unquiesce(UUID)  # always safe


def test_snapshot_copies_the_disk(hv: Hypervisor, tmp_path: Path) -> None:
    root = raw_disk(tmp_path / "root.raw", b"point in time")
    hv.create(UUID, disks=[DiskSpec(root, "raw", "vda")], agent_channel=False, memory_mb=256, vcpus=1)
    hv.snapshot_disk(UUID, "vda", tmp_path / "snap.qcow2")
    raw_disk(root, b"changed later")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(tmp_path / "snap.qcow2"), str(tmp_path / "back.raw")],
                   check=True)
    assert (tmp_path / "back.raw").read_bytes().startswith(b"point in time")


def test_attach_detach_and_guest_operations(hv: Hypervisor, tmp_path: Path) -> None:
    hv.create(UUID, disks=[DiskSpec(raw_disk(tmp_path / "root.raw"), "raw", "vda")], agent_channel=True,
              memory_mb=256, vcpus=1)
    hv.attach_disk(UUID, DiskSpec(raw_disk(tmp_path / "vol.raw"), "raw", "vdb", serial="vol-1"))
    assert [d.target for d in hv.disks(UUID)] == ["vda", "vdb"]
    with pytest.raises(GuestError, match="already has a disk vdb"):
        hv.attach_disk(UUID, DiskSpec(tmp_path / "vol.raw", "raw", "vdb"))
    hv.detach_disk(UUID, "vdb")
    assert [d.target for d in hv.disks(UUID)] == ["vda"]
    with pytest.raises(GuestError, match="has no disk vdc"):
        hv.detach_disk(UUID, "vdc")
    for call in (lambda: hv.guest_exec(UUID, ["/bin/true"]), lambda: hv.guest_read_file(UUID, "/etc/hostname"),
                 lambda: hv.guest_write_file(UUID, "/tmp/x", b"x")):
        with pytest.raises(GuestError, match="fast mode has no guest"):
            call()


def test_bad_disks_are_refused_with_the_fix(hv: Hypervisor, tmp_path: Path) -> None:
    with pytest.raises(GuestError, match="does not exist"):
        hv.create(UUID, disks=[DiskSpec(tmp_path / "missing.qcow2", "qcow2", "vda")], agent_channel=False,
                  memory_mb=256, vcpus=1)
    with pytest.raises(GuestError, match="format 'vmdk'"):
        hv.create(UUID, disks=[DiskSpec(raw_disk(tmp_path / "r"), "vmdk", "vda")], agent_channel=False,
                  memory_mb=256, vcpus=1)
