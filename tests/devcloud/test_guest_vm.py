"""Real QEMU guests under TCG with a real qemu-ga: boot, agent, freeze/thaw hooks, snapshots, disks.

One agent guest is shared by the tests of this module (in order, as a user would drive it); the
agent-less and dead-agent guests boot one at a time next to it, so at most two guests run at once.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcloud.guest import images
from devcloud.guest.hypervisor import DiskSpec, GuestError, Hypervisor, QuiesceError, create_overlay

pytestmark = pytest.mark.guest

PARTITION_OFFSET = 1024 * 1024
AGENT_UUID = "a9e00000-0000-4000-8000-00000000000a"


@pytest.fixture(scope="module")
def cache() -> Path:
    return Path(os.environ.get("DEVCLOUD_GUEST_CACHE") or images.DEFAULT_CACHE_DIR)


@pytest.fixture(scope="module")
def guest_images(cache: Path) -> dict[str, images.GuestImage]:
    return {image.name: image for image in images.build_all(cache)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guests")


@pytest.fixture(scope="module")
def hv(workdir: Path, cache: Path) -> Iterator[Hypervisor]:
    hypervisor = Hypervisor(workdir / "state", image_cache=cache)
    yield hypervisor
    for uuid in os.listdir(hypervisor.instances_dir) if hypervisor.instances_dir.exists() else []:
        hypervisor.destroy(uuid)


@pytest.fixture(scope="module")
def agent_vm(hv: Hypervisor, guest_images: dict[str, images.GuestImage], workdir: Path) -> Iterator[str]:
    root = workdir / "agent-root.qcow2"
    create_overlay(guest_images["sv-agent"].path, root)
    hv.create(AGENT_UUID, disks=[DiskSpec(root, "qcow2", "vda")], agent_channel=True, memory_mb=256, vcpus=1)
    yield AGENT_UUID
    hv.destroy(AGENT_UUID)


def boot(hv: Hypervisor, image: images.GuestImage, workdir: Path, uuid: str, agent_channel: bool) -> None:
    root = workdir / f"{uuid}.qcow2"
    create_overlay(image.path, root)
    hv.create(uuid, disks=[DiskSpec(root, "qcow2", "vda")], agent_channel=agent_channel, memory_mb=256, vcpus=1)
    hv.wait_booted(uuid, timeout=120)


def qemu_pid(hv: Hypervisor, uuid: str) -> int:
    return int((hv.instances_dir / uuid / "qemu.pid").read_text())


def qemu_cmdline(hv: Hypervisor, uuid: str) -> list[str]:
    return Path(f"/proc/{qemu_pid(hv, uuid)}/cmdline").read_bytes().decode().split("\0")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def guest_text(hv: Hypervisor, uuid: str, path: str) -> str:
    return hv.guest_read_file(uuid, path).decode()


def read_from_disk(image: Path, path: str, workdir: Path) -> str:
    """A file of the guest's root partition, read from a disk copy with debugfs (no guest involved)."""
    raw = workdir / f"{image.name}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    done = subprocess.run(["debugfs", "-R", f"cat {path}", f"{raw}?offset={PARTITION_OFFSET}"],
                          capture_output=True, text=True, check=True)
    raw.unlink()
    return done.stdout


def test_agent_guest_boots_under_tcg_and_answers(hv: Hypervisor, agent_vm: str) -> None:
    booted = hv.wait_booted(agent_vm, timeout=120)
    waited = hv.wait_agent(agent_vm, timeout=60)
    argv = qemu_cmdline(hv, agent_vm)
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert any("name=org.qemu.guest_agent.0" in arg for arg in argv)
    code, out, _ = hv.guest_exec(agent_vm, ["/bin/uname", "-r"])
    assert code == 0 and out.decode().strip().endswith("cloud-amd64")
    rss = rss_mib(qemu_pid(hv, agent_vm))
    marker = next(line for line in hv.console_log(agent_vm).read_text().splitlines() if "booted" in line)
    print(f"\nagent guest: booted in {booted:.1f} s ({marker}), agent answered {waited:.1f} s later, "
          f"QEMU RSS {rss:.0f} MiB, load {os.getloadavg()[0]:.1f}")
    assert rss < 400


def test_an_idle_guest_leaves_its_disk_alone(hv: Hypervisor, agent_vm: str, workdir: Path) -> None:
    """Two backups of an idle guest must be identical (no atime updates, no late writeback)."""
    hv.wait_agent(agent_vm, timeout=60)
    time.sleep(3)
    first, second = workdir / "idle-1.raw", workdir / "idle-2.raw"
    hv.snapshot_disk(agent_vm, "vda", first, "raw")
    time.sleep(5)
    hv.snapshot_disk(agent_vm, "vda", second, "raw")
    assert first.read_bytes() == second.read_bytes()
    first.unlink()
    second.unlink()


def test_files_written_in_the_guest_read_back(hv: Hypervisor, agent_vm: str) -> None:
    hv.guest_write_file(agent_vm, "/root/data.txt", b"written through the agent\n")
    assert guest_text(hv, agent_vm, "/root/data.txt") == "written through the agent\n"
    code, out, err = hv.guest_exec(agent_vm, ["/bin/sh", "-c", "cat; echo oops >&2; exit 3"], stdin=b"piped")
    assert (code, out, err) == (3, b"piped", b"oops\n")
    assert hv.guest_exec(agent_vm, ["/bin/sh", "-c", "kill -9 $$"])[0] == -9
    with pytest.raises(GuestError, match="No such file"):
        hv.guest_read_file(agent_vm, "/root/missing.txt")


def test_freeze_runs_the_hook_and_the_snapshot_is_point_in_time(hv: Hypervisor, agent_vm: str, workdir: Path) -> None:
    snapshot = workdir / "frozen.qcow2"
    hv.guest_write_file(agent_vm, "/root/before.txt", b"before the snapshot\n")
    hv.quiesce(agent_vm)
    try:
        with pytest.raises(GuestError, match=r"refused while the filesystems .* are frozen"):
            hv.guest_exec(agent_vm, ["/bin/true"])
        hv.snapshot_disk(agent_vm, "vda", snapshot)
    finally:
        hv.unquiesce(agent_vm)
    hv.guest_write_file(agent_vm, "/root/after.txt", b"after the snapshot\n")
    hv.guest_exec(agent_vm, ["/bin/sync"])

    assert guest_text(hv, agent_vm, "/tmp/freeze") == "I'm frozen\nI'm thawed\n"
    log = guest_text(hv, agent_vm, "/var/log/qemu-ga/qga-fsfreeze-hook.log")
    assert "Executing /etc/qemu-ga/fsfreeze-hook.d/test_hook.sh freeze" in log
    assert "Executing /etc/qemu-ga/fsfreeze-hook.d/test_hook.sh thaw" in log
    assert "finished successfully" in log

    assert read_from_disk(snapshot, "/tmp/freeze", workdir) == "I'm frozen\n"
    assert read_from_disk(snapshot, "/root/before.txt", workdir) == "before the snapshot\n"
    assert read_from_disk(snapshot, "/root/after.txt", workdir) == ""
    info = subprocess.run(["qemu-img", "info", str(snapshot)], capture_output=True, text=True, check=True).stdout
    assert "backing file" not in info  # self-contained: the shared base was neither needed nor written


def test_a_failing_hook_fails_the_freeze_and_leaves_the_guest_thawed(hv: Hypervisor, agent_vm: str) -> None:
    hook = "/etc/qemu-ga/fsfreeze-hook.d/zz_fail.sh"
    hv.guest_write_file(agent_vm, hook, b"#!/bin/sh\necho 'database refuses to freeze'\nexit 7\n")
    hv.guest_exec(agent_vm, ["/bin/chmod", "+x", hook])
    try:
        with pytest.raises(QuiesceError, match="fsfreeze hook has failed"):
            hv.quiesce(agent_vm)
        code, _, _ = hv.guest_exec(agent_vm, ["/bin/true"])  # refused if the guest had stayed frozen
        assert code == 0
        assert "zz_fail.sh freeze failed with status 7" in guest_text(
            hv, agent_vm, "/var/log/qemu-ga/qga-fsfreeze-hook.log")
    finally:
        hv.guest_exec(agent_vm, ["/bin/rm", "-f", hook])


def test_a_freeze_that_times_out_is_thawed_behind_it(hv: Hypervisor, agent_vm: str) -> None:
    hook = "/etc/qemu-ga/fsfreeze-hook.d/zz_slow.sh"
    hv.guest_write_file(agent_vm, hook, b"#!/bin/sh\n[ \"$1\" = freeze ] && sleep 4\nexit 0\n")
    hv.guest_exec(agent_vm, ["/bin/chmod", "+x", hook])
    try:
        with pytest.raises(QuiesceError, match="Guest agent is not responding"):
            hv.quiesce(agent_vm, timeout=1)
        code, _, _ = hv.guest_exec(agent_vm, ["/bin/true"])  # the late freeze was thawed
        assert code == 0
        assert guest_text(hv, agent_vm, "/tmp/freeze") == "I'm frozen\nI'm thawed\n"
    finally:
        hv.guest_exec(agent_vm, ["/bin/rm", "-f", hook])


def test_attach_write_detach_a_raw_volume(hv: Hypervisor, agent_vm: str, workdir: Path) -> None:
    volume = workdir / "volume.raw"
    with open(volume, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    volume_id = "5e1a1a1a-0000-4000-8000-0123456789ab"
    hv.attach_disk(agent_vm, DiskSpec(volume, "raw", "vdb", serial=volume_id))
    by_id = f"/dev/disk/by-id/virtio-{volume_id[:20]}"  # as udev names it on a real guest
    script = (f"for i in $(seq 50); do [ -b {by_id} ] && break; sleep 0.2; done; cat /sys/block/vdb/serial; "
              f"printf 'volume data' | dd of={by_id} conv=fsync 2>/dev/null")
    code, out, err = hv.guest_exec(agent_vm, ["/bin/sh", "-c", script])
    assert code == 0, err
    assert out.decode() == volume_id[:20]
    hv.detach_disk(agent_vm, "vdb")
    assert [d.target for d in hv.disks(agent_vm)] == ["vda"]
    gone = f"for i in $(seq 25); do [ -e {by_id} ] || break; sleep 0.2; done; ls /dev/vd* /dev/disk/by-id"
    _, out, _ = hv.guest_exec(agent_vm, ["/bin/sh", "-c", gone])
    assert "/dev/vdb" not in out.decode() and volume_id[:20] not in out.decode()
    assert volume.read_bytes()[:11] == b"volume data"


def test_stop_is_a_clean_shutdown_and_start_boots_the_same_disk(hv: Hypervisor, agent_vm: str, workdir: Path) -> None:
    hv.guest_write_file(agent_vm, "/root/kept.txt", b"kept across stop and start\n")
    t0 = time.monotonic()
    hv.stop(agent_vm, timeout=30)
    stopped_in = time.monotonic() - t0
    assert not hv.is_running(agent_vm)
    assert "devcloud-guest: powering off" in hv.console_log(agent_vm).read_text()
    assert stopped_in < 25  # the ACPI button did it, not the kill after the timeout
    offline = workdir / "offline.qcow2"
    hv.snapshot_disk(agent_vm, "vda", offline)  # stopped: qemu-img convert
    assert read_from_disk(offline, "/root/kept.txt", workdir) == "kept across stop and start\n"
    hv.start(agent_vm)
    hv.wait_agent(agent_vm, timeout=120)
    assert guest_text(hv, agent_vm, "/root/kept.txt") == "kept across stop and start\n"


def test_guest_without_the_property_has_no_agent_channel(hv: Hypervisor, guest_images: dict[str, images.GuestImage],
                                                         workdir: Path) -> None:
    uuid = "a9e00000-0000-4000-8000-00000000000b"
    boot(hv, guest_images["sv-noagent"], workdir, uuid, agent_channel=False)
    try:
        assert not any("guest_agent" in arg for arg in qemu_cmdline(hv, uuid))
        assert "qemu-ga not started (port: none)" in hv.console_log(uuid).read_text()
        assert not hv.agent_available(uuid)
        with pytest.raises(QuiesceError, match="QEMU guest agent is not configured"):
            hv.quiesce(uuid)
        with pytest.raises(GuestError, match="no guest agent channel"):
            hv.guest_exec(uuid, ["/bin/true"])
    finally:
        hv.destroy(uuid)


def test_dead_agent_makes_quiesce_fail_quickly(hv: Hypervisor, guest_images: dict[str, images.GuestImage],
                                               workdir: Path) -> None:
    uuid = "a9e00000-0000-4000-8000-00000000000c"
    boot(hv, guest_images["sv-agent-dead"], workdir, uuid, agent_channel=True)
    try:
        assert any("name=org.qemu.guest_agent.0" in arg for arg in qemu_cmdline(hv, uuid))
        t0 = time.monotonic()
        with pytest.raises(QuiesceError, match="QEMU guest agent is not connected"):
            hv.quiesce(uuid, timeout=10)
        assert time.monotonic() - t0 < 3
        assert not hv.agent_available(uuid, timeout=1)
        hv.unquiesce(uuid)  # nothing to thaw, and no error
        with pytest.raises(GuestError, match="not connected"):
            hv.guest_read_file(uuid, "/etc/hostname")
    finally:
        hv.destroy(uuid)
