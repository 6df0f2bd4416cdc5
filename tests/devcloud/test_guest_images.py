"""Guest image builds: the variants, what their disks hold, the kernel modules, the cache."""

from __future__ import annotations

import gzip
import os
import subprocess
import time
from pathlib import Path

import pytest

from devcloud.guest import images, kernel
from devcloud.guest.initramfs import CpioWriter

PARTITION_OFFSET = 1024 * 1024


@pytest.fixture(scope="session")
def guest_cache() -> Path:
    """The shared guest image cache (built once, reused by later sessions)."""
    return Path(os.environ.get("DEVCLOUD_GUEST_CACHE") or images.DEFAULT_CACHE_DIR)


@pytest.fixture(scope="session")
def built(guest_cache: Path) -> dict[str, images.GuestImage]:
    return {image.name: image for image in images.build_all(guest_cache)}


def debugfs(qcow2: Path, request: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run one debugfs request on the guest's ext4 root partition, without booting or mounting."""
    raw = tmp_path / f"{qcow2.stem}.raw"
    if not raw.exists():
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(raw)], check=True)
    return subprocess.run(["debugfs", "-R", request, f"{raw}?offset={PARTITION_OFFSET}"],
                          capture_output=True, check=True)


def debugfs_cat(qcow2: Path, path: str, tmp_path: Path) -> str:
    return debugfs(qcow2, f"cat {path}", tmp_path).stdout.decode(errors="replace")


def exists_in(qcow2: Path, path: str, tmp_path: Path) -> bool:
    return b"not found" not in debugfs(qcow2, f"stat {path}", tmp_path).stderr


def test_variants_carry_the_agent_properties(built: dict[str, images.GuestImage]) -> None:
    assert built["sv-agent"].properties["hw_qemu_guest_agent"] == "yes"
    assert built["sv-agent-quiesce"].properties["os_require_quiesce"] == "yes"
    assert "hw_qemu_guest_agent" not in built["sv-noagent"].properties
    dead = built["sv-agent-dead"].properties
    assert (dead["hw_qemu_guest_agent"], dead["os_require_quiesce"],
            dead["devcloud_agent_running"]) == ("yes", "yes", "no")
    for image in built.values():
        assert (image.disk_format, image.container_format) == ("qcow2", "bare")
        assert image.properties["devcloud_agent_running"] in ("yes", "no")
        assert image.path.is_absolute() and image.path.exists()


def test_disks_are_small_partitioned_qcow2(built: dict[str, images.GuestImage]) -> None:
    info = subprocess.run(["qemu-img", "info", "--output=json", str(built["sv-agent"].path)],
                          capture_output=True, text=True, check=True).stdout
    assert '"format": "qcow2"' in info and '"virtual-size": 268435456' in info
    assert built["sv-agent"].path.stat().st_size < 32 * 1024 * 1024


def test_root_disk_holds_agent_hooks_and_init(built: dict[str, images.GuestImage], tmp_path: Path) -> None:
    disk = built["sv-agent"].path
    assert "I'm frozen" in debugfs_cat(disk, "/etc/qemu-ga/fsfreeze-hook.d/test_hook.sh", tmp_path)
    wrapper = debugfs_cat(disk, "/etc/qemu-ga/fsfreeze-hook", tmp_path)
    assert "qga-fsfreeze-hook.log" in wrapper and 'exit "$status"' in wrapper
    assert "qemu-ga" in debugfs_cat(disk, "/sbin/init", tmp_path)
    assert debugfs(disk, "cat /usr/sbin/qemu-ga", tmp_path).stdout.startswith(b"\x7fELF")
    assert exists_in(disk, "/lib64/ld-linux-x86-64.so.2", tmp_path)
    assert not exists_in(disk, "/etc/devcloud/agent-disabled", tmp_path)


def test_dead_agent_disk_disables_the_agent(built: dict[str, images.GuestImage], tmp_path: Path) -> None:
    assert "never starts" in debugfs_cat(built["sv-agent-dead"].path, "/etc/devcloud/agent-disabled", tmp_path)


def test_virtio_modules_load_after_their_dependencies(guest_cache: Path) -> None:
    names = [p.name.split(".ko")[0] for p in kernel.modules_in_load_order(kernel.fetch_kernel(guest_cache))]
    for before, after in (("virtio_ring", "virtio"), ("virtio", "virtio_pci"), ("virtio", "virtio_blk"),
                          ("virtio", "virtio_console")):
        assert names.index(before) < names.index(after), names


def test_initramfs_is_a_cpio_with_init_console_and_modules(guest_cache: Path, tmp_path: Path) -> None:
    archive = tmp_path / "initrd.cpio"
    archive.write_bytes(gzip.decompress(images.boot_files(guest_cache).initrd.read_bytes()))
    listing = subprocess.run(["busybox", "cpio", "-t", "-v", "-F", str(archive)],
                             capture_output=True, text=True, check=True).stdout
    assert " init" in listing and "lib/modules/virtio_blk.ko" in listing
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.startswith("c")


def test_cpio_writer_round_trips(tmp_path: Path) -> None:
    cpio = CpioWriter()
    cpio.directory("d")
    cpio.file("d/f", b"hello", 0o640)
    cpio.symlink("d/l", "f")
    (tmp_path / "a.cpio").write_bytes(cpio.finish())
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d", "-F", str(tmp_path / "a.cpio")], cwd=out, check=True,
                   capture_output=True)
    assert (out / "d/f").read_bytes() == b"hello"
    assert os.readlink(out / "d/l") == "f"


def test_second_build_reuses_the_cache(guest_cache: Path, built: dict[str, images.GuestImage]) -> None:
    t0 = time.monotonic()
    again = {image.name: image for image in images.build_all(guest_cache)}
    assert time.monotonic() - t0 < 3
    assert {n: i.path for n, i in again.items()} == {n: i.path for n, i in built.items()}
