"""The guest kernel: Debian's `linux-image-cloud-amd64`, fetched with `apt-get download` and unpacked.

The cloud kernel is small and has ext4 built in, but its virtio drivers are modules, so the
initramfs must load them; `modules_in_load_order` resolves their `depends=` (virtio_ring before
virtio before virtio_pci, ...) from the modules themselves, because the package ships no modules.dep.
"""

from __future__ import annotations

import lzma
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devcloud.guest import tools

META_PACKAGE = "linux-image-cloud-amd64"

# What the guest needs beyond the built-in drivers: disks, the agent's virtio-serial port, the ext4
# root (built in on Debian's cloud kernel, a module elsewhere) and the ACPI power button as an input
# device, so QMP system_powerdown shuts the guest down cleanly; xfs and device-mapper, so a guest can
# read an xfs file system and an LVM logical volume of its own.
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "ext4", "button", "evdev", "xfs", "dm_mod")


class KernelError(RuntimeError):
    """The guest kernel could not be fetched or lacks what the guest needs."""


@dataclass(frozen=True)
class Kernel:
    version: str  # e.g. "6.1.0-57-cloud-amd64"
    vmlinuz: Path
    modules_dir: Path  # .../lib/modules/<version>

    def module_files(self) -> dict[str, Path]:
        """Module name (dashes as underscores, as the kernel names them) -> .ko file."""
        found: dict[str, Path] = {}
        for path in (self.modules_dir / "kernel").rglob("*.ko*"):
            name = path.name.split(".ko")[0].replace("-", "_")
            found[name] = path
        return found

    def builtin_modules(self) -> set[str]:
        builtin = self.modules_dir / "modules.builtin"
        if not builtin.exists():
            return set()
        return {
            Path(line.strip()).name.split(".ko")[0].replace("-", "_")
            for line in builtin.read_text().splitlines()
            if line.strip()
        }


def fetch_kernel(cache_dir: Path) -> Kernel:
    """Return the unpacked cloud kernel under cache_dir/kernel, downloading it the first time.

    Once unpacked, the kernel is reused without asking apt again, so later builds work offline.
    """
    root = cache_dir / "kernel"
    existing = _find_unpacked(root)
    if existing:
        return existing
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix="kernel-fetch-") as tmp:
        work = Path(tmp)
        meta = _apt_download(META_PACKAGE, work)
        image_pkg = _image_package_of(meta)
        deb = _apt_download(image_pkg, work)
        unpacked = work / "root"
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)], f"unpacking {deb.name}")
        if root.exists():
            shutil.rmtree(root)
        unpacked.rename(root)
    kernel = _find_unpacked(root)
    if not kernel:
        raise KernelError(f"{image_pkg} has no /boot/vmlinuz-* with matching /lib/modules; cannot boot guests")
    return kernel


def modules_in_load_order(kernel: Kernel, wanted: tuple[str, ...] = WANTED_MODULES) -> list[Path]:
    """The .ko files to insmod, every module after the modules it depends on; built-ins are skipped."""
    files = kernel.module_files()
    builtin = kernel.builtin_modules()
    ordered: list[Path] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in builtin:
            return
        if name in chain:
            raise KernelError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        path = files.get(name)
        if path is None:
            raise KernelError(f"kernel {kernel.version} has no module {name} (neither built in nor a .ko)")
        for dep in _depends_of(path):
            visit(dep, chain + (name,))
        done.add(name)
        ordered.append(path)

    for name in wanted:
        visit(name, ())
    return ordered


def read_module(path: Path) -> bytes:
    """The module as insmod needs it (busybox insmod cannot decompress)."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise KernelError(f"{path.name}: compressed modules other than .xz are not supported")


def _depends_of(path: Path) -> list[str]:
    data = read_module(path)
    start = data.find(b"\0depends=")
    if start < 0:
        return []
    end = data.index(b"\0", start + 1)
    value = data[start + len(b"\0depends="):end].decode()
    return [dep.replace("-", "_") for dep in value.split(",") if dep]


def _find_unpacked(root: Path) -> Kernel | None:
    for vmlinuz in sorted((root / "boot").glob("vmlinuz-*")):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        for modules in (root / "lib" / "modules" / version, root / "usr" / "lib" / "modules" / version):
            if modules.is_dir():
                return Kernel(version=version, vmlinuz=vmlinuz, modules_dir=modules)
    return None


def _apt_download(package: str, dest: Path) -> Path:
    # Sandbox user root: apt's _apt user cannot write into a root-owned temporary directory.
    argv = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package]
    try:
        _run(argv, f"apt-get download {package}", cwd=dest)
    except KernelError:
        # Images often ship without apt lists, or with lists older than the archive: refresh once.
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"], "apt-get update (to find the guest kernel package)")
        _run(argv, f"apt-get download {package}", cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise KernelError(f"apt-get download {package} produced no .deb in {dest}")
    return debs[-1]


def _image_package_of(meta_deb: Path) -> str:
    depends = _run(["dpkg-deb", "-f", str(meta_deb), "Depends"], f"reading {meta_deb.name}")
    for alternative in depends.replace("|", ",").split(","):
        name = alternative.strip().split(" ")[0]
        if name.startswith("linux-image-"):
            return name
    raise KernelError(f"{meta_deb.name} depends on no linux-image-* package: {depends.strip()!r}")


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    return tools.run(argv, what, KernelError, cwd=cwd)
