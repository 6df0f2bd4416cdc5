"""`backup --volume` of a Cinder volume on Ceph RBD killed with SIGKILL while it reads.

Real parts: the dev cloud's Ceph, Cinder's own RBD driver (volume type `ceph`), librbd, the real CLI
killed as a crashed proxy would be (its whole process group, no chance to clean up).

What a user checks: the snapshot the killed job made never becomes a second retained base, neither
after the next run nor after `stackvault cleanup` (the image's RBD snapshots, listed with librbd, are
the one base); the base the killed job diffed from is still the next Incremental's (changed-block
path, said in the report); and that Incremental restores the volume's bytes exactly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from e2e.helpers import sha256_file

from devcloud import ceph

from . import test_rbd_volume_backup as volume_tests
from .test_rbd_volume_backup import Guest

setup = volume_tests.setup  # the fixture: a stackvault user of the dev cloud's Ceph, the test's volumes deleted after

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]

KiB, MiB = 1 << 10, 1 << 20
#: What the killed Incremental has to read: enough that it is still reading when the test sees it read.
CHANGED = 384 * MiB


def rbd_snapshots(state: Path, image: str) -> list[str]:
    """The image's RBD snapshots, as Ceph itself lists them (not Cinder's idea of them)."""
    _, rbd = ceph.import_bindings(state)
    cluster = ceph.connect(state, "admin")
    try:
        with cluster.open_ioctx(ceph.POOL) as ioctx, rbd.Image(ioctx, image, read_only=True) as img:
            return sorted(snap["name"] for snap in img.list_snaps())
    finally:
        cluster.shutdown()


def tree_bytes(path: Path) -> int:
    """Bytes under `path`, while a job writes there (a temporary file may be renamed as it is counted)."""
    total = 0
    for f in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            total += f.stat().st_size if f.is_file() else 0
    return total


def poll(what: str, check, timeout: float = 300, every: float = 0.05):
    """`check()`'s first true answer; the test fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_backup_killed_while_reading_leaves_one_base_and_the_next_incremental_diffs_from_it(setup, tmp_path) -> None:
    sv, volumes, state, _ = setup
    vol = volumes.create(f"rbd-kill-{uuid.uuid4().hex[:6]}", volume_type="ceph")
    image = f"volume-{vol.id}"
    guest = Guest(state, image)
    try:
        for offset in range(0, 16 * MiB, 4 * MiB):
            guest.write(offset, 4 * MiB)
        full = sv.run("backup", "--volume", vol.id, "--level", "full", timeout=600).data["volumes"][0]
        assert full["status"] == "success", full
        base = f"snapshot-{full['base_snapshot']}"
        assert rbd_snapshots(state, image) == [base]

        # Much changed: the next Incremental reads for a while, and is killed while it does.
        for offset in range(32 * MiB, 32 * MiB + CHANGED, 8 * MiB):
            guest.write(offset, 4 * MiB)
        repo_before = tree_bytes(sv.repo)
        proc = subprocess.Popen(sv.argv(["backup", "--volume", vol.id]), env=sv.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            new = poll("the killed job's RBD snapshot",
                       lambda: [s for s in rbd_snapshots(state, image) if s != base] or proc.poll() is not None)
            assert proc.poll() is None, f"the backup ended before it was killed: {proc.stderr.read().decode()}"
            # Reading: the repository grows with the changed blocks (random bytes: they do not compress).
            poll("the killed job to store what it reads",
                 lambda: tree_bytes(sv.repo) > repo_before + 16 * MiB or proc.poll() is not None)
            assert proc.poll() is None, f"the backup ended before it was killed: {proc.stderr.read().decode()}"
        finally:
            if proc.poll() is None:  # the whole job, as a crashed proxy loses it
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        killed = new[0]
        assert sorted(rbd_snapshots(state, image)) == sorted([base, killed])
        assert volumes.bases(vol.id) == [full["base_snapshot"]], "the killed job's snapshot is no base"

        # The next run: an Incremental from the base the killed job diffed from, read as changed blocks.
        guest.write(700 * MiB, 64 * KiB)
        report = sv.run("backup", "--volume", vol.id, timeout=600).data
        [inc] = report["volumes"]
        assert report["status"] == "success", report
        [disk] = inc["disks"]
        read = disk["read"]
        assert disk["level"] == "incremental" and read["path"] == "changed_blocks", inc
        assert read["base_snapshot"] == base and read["sample_mismatches"] == 0, inc
        assert disk["bytes_read"] < CHANGED + 16 * MiB, f"only what changed since the base is read: {inc}"
        assert disk["bytes_read"] >= CHANGED // 2, f"what was written before the kill is read: {inc}"
        assert volumes.bases(vol.id) == [inc["base_snapshot"]], "exactly one base: the killed job's is none"
        # In Ceph: the new base, and the killed job's snapshot, a leftover of that job until `cleanup`.
        assert rbd_snapshots(state, image) == sorted([f"snapshot-{inc['base_snapshot']}", killed]), \
            "the superseded base is gone"
        at_inc = guest.sha256(f"snapshot-{inc['base_snapshot']}")

        # `cleanup` removes what the killed job left (its snapshot) and keeps the base: one RBD snapshot.
        cleaned = sv.run("cleanup").data
        assert cleaned["failed"] == [], cleaned
        assert killed[len("snapshot-"):] in [s["id"] for s in cleaned["snapshots"]], cleaned
        assert [b["id"] for b in cleaned["bases"] if b["volume_id"] == vol.id] == [inc["base_snapshot"]], cleaned
        assert rbd_snapshots(state, image) == [f"snapshot-{inc['base_snapshot']}"]
        assert volumes.snapshots(vol.id) == [inc["base_snapshot"]]

        out = sv.restore(inc["backup_id"], tmp_path / "restored.raw")
        assert sha256_file(out) == at_inc, f"backup {inc['backup_id']} restored other bytes: {inc}"
    finally:
        guest.close()
