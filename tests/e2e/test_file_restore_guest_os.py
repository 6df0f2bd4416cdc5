"""A disk whose file systems hold an operating system, as libguestfs' inspection recognises it:
its root file system is shown and addressed at `/` (`/etc/hostname` is the guest's), and the other
file systems keep their device names beside it (`/sda1`).

The disk: an MBR table, a small ext4 "boot" partition and an ext4 root with what inspection looks
for in a Linux root (/etc/fstab, /etc/os-release, /bin, /usr/bin). `slow`: the appliance starts
under QEMU TCG, and inspection reads the root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .guest_disks import RUN_TIMEOUT, GuestStackvault, ext4_image, partitioned_disk
from .helpers import MIB

pytestmark = pytest.mark.slow

PART_SIZE = 24 * MIB
HOSTNAME = b"guest-with-an-os\n"


def _root_tree(root: Path) -> Path:
    for d in ("bin", "usr/bin", "boot", "home/alice"):
        (root / d).mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "fstab").write_text("/dev/sda2 / ext4 defaults 0 1\n/dev/sda1 /boot ext4 defaults 0 2\n")
    (root / "etc" / "hostname").write_bytes(HOSTNAME)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc" / "os-release").write_text('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n'
                                             'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    (root / "home" / "alice" / "notes.txt").write_bytes(b"notes\n")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("guestos")
    boot = tmp / "boot"
    boot.mkdir()
    (boot / "vmlinuz").write_bytes(b"not really a kernel\n")
    parts = [ext4_image(boot, tmp / "p1.ext4", PART_SIZE),
             ext4_image(_root_tree(tmp / "root"), tmp / "p2.ext4", PART_SIZE)]
    disk = partitioned_disk(tmp / "disk.raw", parts, PART_SIZE)
    sv = GuestStackvault(tmp / "sv")
    sv.init("64KiB")
    return {"sv": sv, "backup": sv.backup(disk)["backup_id"]}


def test_the_os_root_is_at_the_top_and_the_others_keep_device_names(world: dict, tmp_path: Path) -> None:
    sv = world["sv"]
    found = sv.run("files", world["backup"], "find", "/", timeout=RUN_TIMEOUT).data["paths"]
    assert {"/etc/hostname", "/home/alice/notes.txt", "/sda1", "/sda1/vmlinuz"} <= set(found), found
    assert not [p for p in found if p.startswith("/sda2")], "the root is not shown twice"
    top = {e["path"] for e in sv.run("files", world["backup"], "ls", "/", timeout=RUN_TIMEOUT).data["entries"]}
    assert {"/etc", "/bin", "/usr", "/home", "/sda1"} <= top and "/sda2" not in top, top
    sv.run("files", world["backup"], "get", "/etc/hostname", "--to", str(tmp_path), timeout=RUN_TIMEOUT)
    assert (tmp_path / "hostname").read_bytes() == HOSTNAME
