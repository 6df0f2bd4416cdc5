"""File-level restore of a real guest's xfs file system and LVM logical volume.

A data volume is laid out before it is attached (guestfish: an MBR with an xfs partition, and a
second partition holding the LVM volume group vg0 with an ext4 logical volume), since the guest has
no mkfs of its own; from then on the guest owns it: a TCG guest of the dev cloud mounts the xfs,
activates the volume group with its own lvm, mounts the logical volume and writes known files into
both. The server is backed up, one file is changed in the guest and it is backed up again. `files ls`
lists both file systems of the volume; the files come back (`restore --file`, `files get`) as each
backup held them: sha256 equal to what the guest's own sha256sum said then through its agent, with
the mode and modification time the guest's stat showed. (ext4 inside a partition, the guest's root
disk, is covered by test_file_restore_guest.py.)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import GuestShell
from .test_quiesce_proof import booted_guest
from .test_server_backup import _leftovers

pytestmark = [pytest.mark.devcloud, pytest.mark.guest, pytest.mark.slow]

#: The volume's layout, in 512-byte sectors: xfs needs 300 MiB at least.
XFS_SECTORS = (2048, 2048 + (320 << 11) - 1)
#: The guest's agent runs lvm without udev (the guest has none): device-mapper makes the nodes.
LVM_CONFIG = "activation { udev_sync = 0 udev_rules = 0 }"
XFS_FILE = "/mnt/xfs/db/dump.bin"
LV_FILE = "/mnt/lv/app/config.bin"
#: Where `files` shows them: the volume's file systems under their device names.
SHOWN = {XFS_FILE: "/sda1/db/dump.bin", LV_FILE: "/vg0/data/app/config.bin"}


def _lay_out(volume: Path) -> None:
    """Partitions, xfs, the volume group and the logical volume's ext4, written into the volume's file."""
    steps = [["part-init", "/dev/sda", "mbr"],
             ["part-add", "/dev/sda", "p", str(XFS_SECTORS[0]), str(XFS_SECTORS[1])],
             ["part-add", "/dev/sda", "p", str(XFS_SECTORS[1] + 1), "-1"],
             ["mkfs", "xfs", "/dev/sda1"],
             ["pvcreate", "/dev/sda2"], ["vgcreate", "vg0", "/dev/sda2"], ["lvcreate", "data", "vg0", "256"],
             ["mkfs", "ext4", "/dev/vg0/data"]]
    argv = ["guestfish", "--format=raw", "-a", str(volume), "--", "run"]  # "--": "-1" is the last sector
    for step in steps:
        argv += [":", *step]
    made = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"})
    assert made.returncode == 0, made.stderr


def test_xfs_and_lvm_files_of_a_real_guest_come_back_as_each_backup_held_them(
        user, devcloud, conn, cloud_objects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, server, hv = booted_guest(devcloud, conn, cloud_objects, "files-vol")
    vol = conn.block_storage.create_volume(size=1, name=f"{name}-data")
    conn.block_storage.wait_for_status(vol, "available", wait=120)
    _lay_out(devcloud.state_dir / "cinder" / "volumes" / f"volume-{vol.id}")
    conn.compute.create_volume_attachment(server, volume=vol.id)
    conn.block_storage.wait_for_status(vol, "in-use", wait=120)

    guest = GuestShell(hv, server.id, timeout=120)
    sh, in_guest = guest.sh, guest.file_facts

    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS", os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"))
    sh("n=0; until [ -b /dev/vdb2 ] || [ $n -ge 60 ]; do sleep 1; n=$((n+1)); done; "
       "mkdir -p /mnt/xfs /mnt/lv /run/lock/lvm && mount -t xfs /dev/vdb1 /mnt/xfs && "
       f"lvm vgchange -ay --config '{LVM_CONFIG}' vg0 && mount -t ext4 /dev/mapper/vg0-data /mnt/lv && "
       "mkdir -p /mnt/xfs/db /mnt/lv/app")
    hv.guest_write_file(server.id, XFS_FILE, os.urandom(700_000))
    hv.guest_write_file(server.id, LV_FILE, os.urandom(90_000))
    sh(f"chmod 640 {XFS_FILE} && chmod 600 {LV_FILE} && sync")
    held = {path: in_guest(path) for path in SHOWN}
    first = user.run("backup", "--server", name, "--level", "full", timeout=900).data["servers"][0]
    assert first["status"] == "success", first

    hv.guest_write_file(server.id, LV_FILE, os.urandom(50_000))
    sh(f"chmod 644 {LV_FILE} && sync")
    changed = in_guest(LV_FILE)
    assert changed[0] != held[LV_FILE][0]
    second = user.run("backup", "--server", name, timeout=900).data["servers"][0]
    assert second["status"] == "success", second

    top = {e["path"] for e in user.run("files", first["backup_id"], "--disk", "vdb", "ls", "/",
                                       timeout=600).data["entries"]}
    assert top == {"/sda1", "/vg0"}, top

    def check(got: Path, expected: tuple[str, int, int], what: str) -> None:
        digest, mode, mtime = expected
        assert hashlib.sha256(got.read_bytes()).hexdigest() == digest, what
        st = got.stat()
        assert (st.st_mode & 0o7777, int(st.st_mtime)) == (mode, mtime), what

    out = tmp_path / "first"
    out.mkdir()
    user.run("restore", first["backup_id"], "--disk", "vdb", "--file", SHOWN[XFS_FILE], "--file", SHOWN[LV_FILE],
             "--to", f"file:{out}", timeout=600)
    check(out / "dump.bin", held[XFS_FILE], "the xfs file of the first backup")
    check(out / "config.bin", held[LV_FILE], "the logical volume's file of the first backup")

    out = tmp_path / "second"
    out.mkdir()
    user.run("files", second["backup_id"], "--disk", "vdb", "get", SHOWN[LV_FILE], "--to", str(out), timeout=600)
    check(out / "config.bin", changed, "the logical volume's changed file of the second backup")
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}
