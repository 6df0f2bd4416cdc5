"""Guest images the dev cloud seeds into Glance, built once from Debian packages and cached.

A build is keyed by what goes into it (kernel version, busybox and qemu-ga binaries, the guest
scripts and the builder's own code), so a changed input yields a new build directory and an
unchanged one costs only hashing. The newest older build is kept (another checkout may still use it),
older ones are removed.

Layout of `cache_dir`: `kernel/` (the unpacked Debian kernel package), `build-<key>/` with
`vmlinuz`, `initrd.img`, `disk-agent.qcow2`, `disk-agent-dead.qcow2` and `manifest.json`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devcloud.guest import initramfs, kernel, rootfs

BUILD_FORMAT = "1"
# Where `devcloud up` builds them (its --cache-dir + /guest) unless $DEVCLOUD_GUEST_CACHE says otherwise.
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[3] / ".state" / "cache" / "guest"
BUSYBOX = Path("/bin/busybox")
QEMU_GA = Path("/usr/sbin/qemu-ga")
KERNEL_CMDLINE = "console=ttyS0 root=/dev/vda1 rw panic=-1 quiet"

# Which root disk each image uses and the Glance properties it carries. `devcloud_agent_running`
# says whether the guest starts qemu-ga once it has the virtio channel: fast mode (no VM) reads it.
_AGENT = {"hw_qemu_guest_agent": "yes", "devcloud_agent_running": "yes"}
VARIANTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("sv-agent", "agent", dict(_AGENT)),
    ("sv-agent-quiesce", "agent", {**_AGENT, "os_require_quiesce": "yes"}),
    # qemu-ga is installed, as on most cloud images: setting hw_qemu_guest_agent=yes on this image
    # (as the seed document does) makes servers created afterwards answer the agent.
    ("sv-noagent", "agent", {"devcloud_agent_running": "yes"}),
    ("sv-agent-dead", "agent-dead",
     {"hw_qemu_guest_agent": "yes", "os_require_quiesce": "yes", "devcloud_agent_running": "no"}),
)
DISKS = {"agent": True, "agent-dead": False}  # disk name -> does the guest start qemu-ga


class ImageBuildError(RuntimeError):
    """A guest image could not be built; the message names the missing tool or package."""


@dataclass(frozen=True)
class GuestImage:
    name: str
    path: Path
    disk_format: str = "qcow2"
    container_format: str = "bare"
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BootFiles:
    """What QEMU boots the root disks with (-kernel/-initrd/-append), as Glance aki/ari images would be."""

    kernel: Path
    initrd: Path
    cmdline: str = KERNEL_CMDLINE


def build_all(cache_dir: Path) -> list[GuestImage]:
    """Build (or reuse) every guest image variant and return them, ready for a Glance upload."""
    build = _ensure_build(Path(cache_dir).resolve())
    return [
        GuestImage(name=name, path=build / f"disk-{disk}.qcow2", properties=dict(properties))
        for name, disk, properties in VARIANTS
    ]


def boot_files(cache_dir: Path) -> BootFiles:
    """The kernel and initramfs matching the disks of `build_all(cache_dir)` (built if needed)."""
    build = _ensure_build(Path(cache_dir).resolve())
    return BootFiles(kernel=build / "vmlinuz", initrd=build / "initrd.img")


def _ensure_build(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".build.lock"):
        try:
            guest_kernel = kernel.fetch_kernel(cache_dir)
            for tool in (BUSYBOX, QEMU_GA):
                if not tool.exists():
                    raise ImageBuildError(f"{tool} is missing: install busybox-static and qemu-guest-agent "
                                          "(deps/apt-devcloud.txt, scripts/bootstrap)")
            build = cache_dir / f"build-{_content_key(guest_kernel.version)}"
            if (build / "manifest.json").exists():
                return build
            _build(guest_kernel, build)
            _prune(cache_dir, keep=build)
            return build
        except (kernel.KernelError, rootfs.RootfsError) as exc:
            raise ImageBuildError(f"building guest images in {cache_dir}: {exc}") from exc


def _build(guest_kernel: kernel.Kernel, build: Path) -> None:
    if build.exists():
        shutil.rmtree(build)  # a build interrupted before its manifest was written
    work = build.with_name(build.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    shutil.copyfile(guest_kernel.vmlinuz, work / "vmlinuz")
    initramfs.build_initramfs(guest_kernel, BUSYBOX, work / "initrd.img")
    for disk, agent_enabled in DISKS.items():
        with tempfile.TemporaryDirectory(dir=work, prefix="root-") as tmp:
            rootfs.populate_root(Path(tmp), busybox=BUSYBOX, qemu_ga=QEMU_GA,
                                 agent_enabled=agent_enabled, image_name=f"devcloud-{disk}")
            rootfs.make_disk(Path(tmp), work / f"disk-{disk}.qcow2")
    manifest = {"format": BUILD_FORMAT, "kernel": guest_kernel.version, "cmdline": KERNEL_CMDLINE,
                "images": [{"name": n, "disk": f"disk-{d}.qcow2", "properties": p} for n, d, p in VARIANTS]}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    work.rename(build)


def _prune(cache_dir: Path, keep: Path, spare: int = 1) -> None:
    """Drop all but the `spare` newest older builds: Glance and Nova hold their own copies of the
    disks, and running QEMUs have their kernel in memory, so only a build in use by another checkout
    of slightly different code needs to survive a while."""
    older = sorted((p for p in cache_dir.glob("build-*") if p != keep and p.is_dir()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in older[spare:]:
        shutil.rmtree(stale, ignore_errors=True)


def _content_key(kernel_version: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"format={BUILD_FORMAT}\nkernel={kernel_version}\ncmdline={KERNEL_CMDLINE}\n".encode())
    inputs = [BUSYBOX, QEMU_GA, *sorted(initramfs.FILES.iterdir())]
    inputs += [Path(str(module.__file__)) for module in (kernel, initramfs, rootfs)] + [Path(__file__)]
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # Another process (devcloud up, a test session) may be building into the same cache.
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
