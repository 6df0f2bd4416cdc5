"""A tenant's journal is replayed into a bounded overlay in the proxy's working directory, never in
/tmp: an ext4 whose journal holds 40 MiB of committed, unreplayed transactions reads fine with room
to spare, and with less room than the replay needs it is one error line, the appliance stopped and
nothing left in the working directory.

The journal is written by debugfs (`journal_write`), which leaves the file system marked as needing
recovery, as a crash of the guest would. `slow`: the appliance starts under QEMU TCG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .guest_disks import RUN_TIMEOUT, GuestStackvault, ext4_image, leftovers, tmpfs
from .helpers import MIB, one_error

pytestmark = pytest.mark.slow

#: The bytes the journal's transactions write on replay, 1 MiB (256 blocks) per transaction.
REPLAYED = 40 * MIB
#: Where the replay writes: free blocks past the journal, which mke2fs puts at 32801-49184 of this
#: disk. A replay that overwrote the journal's own blocks would leave its superblock as random bytes.
FIRST_BLOCK = 50_000
#: The margin kept free in the working directory (jobs.file_restore.FREE_MARGIN).
MARGIN = 64 * MIB


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("journal")
    (tmp / "tree").mkdir()
    (tmp / "tree" / "hello.txt").write_bytes(b"hello from a crashed guest\n")
    disk = ext4_image(tmp / "tree", tmp / "disk.raw", 256 * MIB, "-b", "4096", "-J", "size=64")
    span = f"{FIRST_BLOCK} {REPLAYED // 4096}"
    in_use = subprocess.run(["debugfs", "-R", f"testb {span}", str(disk)], capture_output=True, text=True).stdout
    assert "marked in use" not in in_use, "the replayed blocks are free blocks, outside the journal"
    payload = tmp / "payload"
    payload.write_bytes(os.urandom(MIB))
    script = []
    # one transaction per MiB, as a guest's kernel commits them
    for n in range(REPLAYED // MIB):
        first = FIRST_BLOCK + n * 256
        script += ["jo", f"jw -b {','.join(str(b) for b in range(first, first + 256))} {payload}", "jc"]
    subprocess.run(["debugfs", "-w", "-f", "-", str(disk)], input="\n".join(script).encode(), check=True,
                   capture_output=True)
    features = subprocess.run(["dumpe2fs", "-h", str(disk)], capture_output=True, text=True).stdout
    assert "needs_recovery" in features, "the journal waits to be replayed"
    sv = GuestStackvault(tmp / "sv")
    sv.init("64KiB")
    return {"sv": sv, "disk": disk, "backup": sv.backup(disk)["backup_id"]}


def _overlays(parent: Path) -> int:
    """The largest overlay of a files command under `parent`."""
    found = [p.stat().st_size for p in parent.glob("sv-files-*/overlay.qcow2")] if parent.exists() else []
    return max(found, default=0)


def test_the_journal_is_replayed_in_the_working_directory(world: dict) -> None:
    sv = world["sv"]
    proc = sv.popen("files", world["backup"], "ls", "/")
    in_workdir = in_tmp = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        in_workdir = max(in_workdir, _overlays(sv.workdir / "tmp"))
        in_tmp = max(in_tmp, _overlays(sv.tmpdir))
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "/hello.txt" in out
    assert in_workdir >= REPLAYED // 2, f"the replay wrote into the working directory: {in_workdir} bytes"
    assert in_tmp == 0, "nothing of the replay in the temporary directory"


def test_a_replay_larger_than_the_room_is_one_line(world: dict) -> None:
    sv = world["sv"]
    before = leftovers(sv)
    with tmpfs(sv.workdir, MARGIN + 16 * MIB):
        res = sv.run("files", world["backup"], "ls", "/", expect=None, timeout=RUN_TIMEOUT)
        one_error(res, "scratch space", str(sv.workdir), rc=1)
        assert list((sv.workdir / "tmp").iterdir()) == [], "the overlay is removed"
    assert leftovers(sv) == before, "no appliance or socket directory is left"


def test_a_journal_that_cannot_be_loaded_is_named_in_the_error(world: dict, tmp_path: Path) -> None:
    """A journal whose superblock is gone: the kernel refuses the mount, and the one error line says
    why (what a user needs to tell a damaged file system from a bug)."""
    sv = world["sv"]
    disk = shutil.copy(world["disk"], tmp_path / "lost-journal.raw")
    at = int(subprocess.run(["debugfs", "-R", "bmap <8> 0", str(disk)], capture_output=True, text=True,
                            check=True).stdout.split()[0])
    with open(disk, "r+b") as f:
        f.seek(at * 4096)
        f.write(bytes(4096))
    bid = sv.backup(disk)["backup_id"]
    res = sv.run("files", bid, "ls", "/", expect=None, timeout=RUN_TIMEOUT)
    one_error(res, "no file system that can be read", "ext4 (", "superblock", rc=2)
