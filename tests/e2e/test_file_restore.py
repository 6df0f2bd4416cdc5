"""File restore: files come back from the file systems inside a backed-up disk, byte-identical, with
their owners, modes and times; bad and hostile disks give one error line and leave nothing behind.

The disk is built without a guest: an ext4 file system populated by `mke2fs -d` from a tree of known
files, written into the first partition of an MBR partition table (sfdisk); the second partition is an
LVM physical volume holding an xfs logical volume, made and filled by guestfish. Every `files`
command starts a libguestfs appliance (QEMU TCG here: about 15 s each), so the module is `slow` and
builds its disk and backups once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from .guest_disks import RUN_TIMEOUT, GuestStackvault, leftovers
from .helpers import MIB, measured, one_error

pytestmark = pytest.mark.slow

PART1_START = 1 * MIB
PART1_SIZE = 32 * MIB
DISK_SIZE = 400 * MIB
MTIME = 1_600_000_000

#: The files of the ext4 partition: path -> (bytes, mode, uid, gid).
EXT4_FILES = {
    "etc/hostname": (b"web-1\n", 0o644, 0, 0),
    "etc/app/app.conf": (b"listen = 8080\n" * 100, 0o640, 0, 33),
    "etc/app/secret.key": (os.urandom(3000), 0o600, 1000, 1000),
    "home/alice/notes.txt": (b"tuesday's dump is the good one\n", 0o664, 1000, 1000),
    "home/alice/big.bin": (os.urandom(3 * MIB + 123), 0o755, 1000, 1000),
}
DUMP = os.urandom(2 * MIB + 7)


def _tree(root: Path, files: dict[str, tuple[bytes, int, int, int]]) -> Path:
    for rel, (data, mode, uid, gid) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chown(p, uid, gid)
        p.chmod(mode)
        os.utime(p, (MTIME, MTIME + len(rel)))
    for d in sorted({p for p in root.rglob("*") if p.is_dir()}, reverse=True):
        os.utime(d, (MTIME, MTIME))
    return root


def _ext4(tree: Path, out: Path) -> Path:
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(out), f"{PART1_SIZE // 1024}k"],
                   check=True, capture_output=True)
    return out


def _put_partition(disk: Path, part: Path) -> None:
    with open(disk, "r+b") as d, open(part, "rb") as p:
        d.seek(PART1_START)
        while chunk := p.read(MIB):
            d.write(chunk)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A repository holding two backups of the disk; the second has a changed notes.txt."""
    if os.geteuid() != 0:
        pytest.skip("owners are restored only by root")
    tmp = tmp_path_factory.mktemp("files")
    disk = tmp / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    layout = f"label: dos\nstart={PART1_START // 512}, size={PART1_SIZE // 512}, type=83\ntype=8e\n"
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout.encode(), check=True, capture_output=True)
    dump_dir = tmp / "dump"
    dump_dir.mkdir()
    (dump_dir / "db.dump").write_bytes(DUMP)
    started = time.monotonic()
    subprocess.run(["guestfish", "--format=raw", "-a", str(disk), "run",
                    ":", "pvcreate", "/dev/sda2", ":", "vgcreate", "vg0", "/dev/sda2",
                    ":", "lvcreate", "data", "vg0", "320", ":", "mkfs", "xfs", "/dev/vg0/data",
                    ":", "mount", "/dev/vg0/data", "/", ":", "upload", str(dump_dir / "db.dump"), "/db.dump",
                    ":", "chmod", "0640", "/db.dump", ":", "chown", "26", "26", "/db.dump"],
                   check=True, capture_output=True, timeout=RUN_TIMEOUT, env=_guestfs_env())
    guestfish_s = time.monotonic() - started
    _put_partition(disk, _ext4(_tree(tmp / "tree1", EXT4_FILES), tmp / "p1.ext4"))
    sv = GuestStackvault(tmp / "sv")
    sv.init("64KiB")
    first = sv.backup(disk, level="full")["backup_id"]
    changed = {**EXT4_FILES, "home/alice/notes.txt": (b"wednesday's dump is better\n", 0o664, 1000, 1000)}
    _put_partition(disk, _ext4(_tree(tmp / "tree2", changed), tmp / "p1b.ext4"))
    second = sv.backup(disk)["backup_id"]
    print(f"guestfish built the LVM/xfs partition in {guestfish_s:.1f} s")
    return {"sv": sv, "tmp": tmp, "first": first, "second": second, "changed": changed}


def _guestfs_env() -> dict[str, str]:
    return {**os.environ, "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


def _files(world: dict, *args: str, expect: int | None = 0):
    return world["sv"].run("files", *args, expect=expect, timeout=RUN_TIMEOUT)


def test_ls_shows_file_systems_and_files(world: dict) -> None:
    top = {e["path"] for e in _files(world, world["first"], "ls", "/").data["entries"]}
    assert top == {"/sda1", "/vg0"}, top
    etc = {e["path"]: e for e in _files(world, world["first"], "ls", "/sda1/etc/app").data["entries"]}
    conf = etc["/sda1/etc/app/app.conf"]
    assert (conf["mode"], conf["uid"], conf["gid"], conf["size"]) == ("-rw-r-----", 0, 33, 1400)
    assert conf["mtime"] == MTIME + len("etc/app/app.conf")


def test_get_returns_a_tree_with_owners_modes_and_times(world: dict, tmp_path: Path) -> None:
    _files(world, world["first"], "get", "/sda1/home", "--to", str(tmp_path))
    _files(world, world["first"], "get", "/sda1/etc", "--to", str(tmp_path))
    for rel, (data, mode, uid, gid) in EXT4_FILES.items():
        got = tmp_path / rel
        st = got.stat()
        assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest(), rel
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, uid, gid), rel
        assert int(st.st_mtime) == MTIME + len(rel), rel
    assert not list(tmp_path.glob("*.partial"))


def test_restore_file_cat_and_find(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    world["sv"].run("restore", world["first"], "--file", "/vg0/data/db.dump", "--file", "/sda1/etc/hostname",
                    "--to", f"file:{out}", timeout=RUN_TIMEOUT)
    assert (out / "db.dump").read_bytes() == DUMP
    st = (out / "db.dump").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 26, 26)
    assert (out / "hostname").read_bytes() == b"web-1\n"
    found = _files(world, world["first"], "find", "/sda1", "--name", "*.conf").data["paths"]
    assert found == ["/sda1/etc/app/app.conf"]


def test_cat_is_the_file_bytes(world: dict) -> None:
    sv = world["sv"]
    proc = subprocess.run(sv.argv(["files", world["first"], "cat", "/vg0/data/db.dump"], json_out=False),
                          capture_output=True, env=sv.env(), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DUMP


def test_each_backup_gives_its_own_version(world: dict, tmp_path: Path) -> None:
    for which, expected in (("first", EXT4_FILES), ("second", world["changed"])):
        out = tmp_path / which
        out.mkdir()
        _files(world, world[which], "get", "/sda1/home/alice/notes.txt", "--to", str(out))
        assert (out / "notes.txt").read_bytes() == expected["home/alice/notes.txt"][0]


def test_bad_input_is_one_line_and_leaves_nothing(world: dict, tmp_path: Path) -> None:
    before = leftovers(world["sv"])
    one_error(_files(world, "nosuchbackup", "ls", "/", expect=None), "nosuchbackup", rc=2)
    one_error(_files(world, world["first"], "ls", "/sda1/nope", expect=None), "/sda1/nope", rc=2)
    one_error(_files(world, world["first"], "get", "/sda1/etc/hostname", "--to", str(tmp_path / "none"),
                     expect=None), "not a directory", rc=2)
    # a disk without any file system: random bytes
    sv = world["sv"]
    noise = tmp_path / "noise.raw"
    noise.write_bytes(os.urandom(4 * MIB))
    bid = sv.backup(noise)["backup_id"]
    one_error(_files(world, bid, "ls", "/", expect=None), "no file system", rc=2)
    assert leftovers(world["sv"]) == before


def test_hostile_file_system_is_bounded(world: dict, tmp_path: Path) -> None:
    """An ext4 whose metadata is garbage past the superblock: the appliance may fail or list
    nonsense, but the command ends within its timeout, with one line or a listing, and memory stays
    within the appliance's bound (the file system is parsed in the appliance, not here)."""
    img = _ext4(_tree(tmp_path / "tree", EXT4_FILES), tmp_path / "hostile.raw")
    with open(img, "r+b") as f:
        for at in range(4096, 3 * MIB, 8192):  # group descriptors, bitmaps, inode tables
            f.seek(at)
            f.write(os.urandom(512))
    sv = world["sv"]
    bid = sv.backup(img)["backup_id"]
    before = leftovers(sv)
    started = time.monotonic()
    res, peak = measured(sv, "files", bid, "find", "/", "--timeout", "300")
    took = time.monotonic() - started
    assert "Traceback" not in res.stderr, res.describe()
    if res.rc != 0:
        one_error(res)
    assert took < 400, f"the timeout bounds the run: {took:.0f} s"
    # GNU time's peak covers the appliance's QEMU too (reaped by the command): its 512 MiB of guest
    # memory plus QEMU's own, and the proxy process; a file system parsed here could take far more
    assert peak < 1024 * MIB, f"memory stays within the appliance's bound: {peak >> 20} MiB"
    assert leftovers(sv) == before


def test_the_timeout_stops_the_appliance(tmp_path: Path) -> None:
    """A bound far below the appliance's start: the watchdog kills it, the command says so in one
    line, and no QEMU is left running."""
    if os.geteuid() != 0:
        pytest.skip("the tree's owners are set by root")
    sv = GuestStackvault(tmp_path / "sv")
    sv.init("64KiB")
    bid = sv.backup(_ext4(_tree(tmp_path / "tree", EXT4_FILES), tmp_path / "small.raw"))["backup_id"]
    before = leftovers(sv)
    started = time.monotonic()
    res = sv.run("files", bid, "ls", "/", "--timeout", "2", expect=None, timeout=RUN_TIMEOUT)
    one_error(res, "longer than 2 s", rc=1)
    assert time.monotonic() - started < 120
    assert leftovers(sv) == before
