"""Backups of RBD snapshots (`--source rbd:POOL/IMAGE@SNAP`) on a real single-node Ceph, through librbd.

What a user checks: an Incremental reads about what changed (not the image), says so in its report,
and restores, on its own, exactly the bytes of its snapshot; when the changed-block list cannot be
used (base snapshot deleted, or deleted and made again under its name, image resized or created
again) the Incremental reads everything, says
why, and is just as exact, and the next one is fast again.

The cluster is started alone (one monitor, one OSD, no OpenStack) in a short temporary folder: a few
seconds instead of a whole dev cloud. The guest's writes go into the image as client.admin; stackvault
reads as `client.stackvault`, which has `profile rbd-read-only` on the pool.

A listing that misses a change cannot be made with a real librbd (a snapshot cannot be written to),
so the sample that would catch one is tested on a given listing in tests/unit/test_changed_blocks.py.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcloud import ceph, processes
from devcloud.context import CloudContext
from stackvault.engine.rbdsource import open_rbd
from stackvault.jobs.backup import CHANGED_BLOCKS_OFF

from .helpers import BLOCK, KIB, MIB, Stackvault, one_error, sha256_file

pytestmark = pytest.mark.slow

SIZE = 48 * MIB
OBJECT = 4 * MIB  # librbd's default object size
IMAGE = "vm-disk"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    """A fresh single-node Ceph (devcloud.ceph without the rest of the cloud); its state folder."""
    state = Path(tempfile.mkdtemp(prefix="sv-ceph-"))  # short: the admin sockets live under it

    def stop() -> None:
        ceph.stop(state)
        processes.stop_all(state)

    try:
        with processes.stopped_at_exit(stop):
            ceph.start(CloudContext(state_dir=state))
            yield state
    finally:
        shutil.rmtree(state, ignore_errors=True)


class Guest:
    """The image as its guest and its cloud see it: writes, discards, snapshots (as client.admin)."""

    def __init__(self, state: Path):
        _, self.rbd = ceph.import_bindings(state)
        self.admin = ceph.connect(state, "admin")
        self.ioctx = self.admin.open_ioctx(ceph.POOL)
        self.proxy = ceph.connect(state, ceph.PROXY_USER)
        self.proxy_ioctx = self.proxy.open_ioctx(ceph.POOL)
        self.rng = random.Random(20261207)

    def close(self) -> None:
        self.ioctx.close()
        self.proxy_ioctx.close()
        self.admin.shutdown()
        self.proxy.shutdown()

    def create(self, size: int = SIZE) -> None:
        self.rbd.RBD().create(self.ioctx, IMAGE, size)

    def remove(self) -> None:
        with self.rbd.Image(self.ioctx, IMAGE) as img:
            for snap in list(img.list_snaps()):
                img.remove_snap(snap["name"])
        self.rbd.RBD().remove(self.ioctx, IMAGE)

    def write(self, offset: int, length: int) -> None:
        with self.rbd.Image(self.ioctx, IMAGE) as img:
            img.write(self.rng.randbytes(length), offset)

    def scatter(self, count: int, length: int, below: int) -> None:
        for _ in range(count):
            self.write(self.rng.randrange(0, (below - length) // 4096) * 4096, length)

    def discard(self, offset: int, length: int) -> None:
        with self.rbd.Image(self.ioctx, IMAGE) as img:
            img.discard(offset, length)

    def resize(self, size: int) -> None:
        with self.rbd.Image(self.ioctx, IMAGE) as img:
            img.resize(size)

    def snap(self, name: str) -> None:
        with self.rbd.Image(self.ioctx, IMAGE) as img:
            img.create_snap(name)

    def remove_snap(self, name: str) -> None:
        with self.rbd.Image(self.ioctx, IMAGE) as img:
            img.remove_snap(name)

    def listed_blocks(self, base: str, snap: str) -> int:
        """How many blocks librbd's list of the extents written between `base` and `snap` makes a
        reader read: every block a written extent touches, and the partly discarded ones."""
        blocks: set[int] = set()

        def touch(offset: int, length: int, exists: bool) -> None:
            first, last = offset // BLOCK, (offset + length - 1) // BLOCK
            if exists:
                blocks.update(range(first, last + 1))
            else:
                blocks.update(i for i in (first, last) if offset > i * BLOCK or offset + length < (i + 1) * BLOCK)

        with self.rbd.Image(self.proxy_ioctx, IMAGE, snapshot=snap, read_only=True) as img:
            img.diff_iterate(0, img.size(), base, touch)
        return len(blocks)

    def read(self, snap: str) -> bytes:
        """The whole image at `snap`, read by the proxy's user."""
        with self.rbd.Image(self.proxy_ioctx, IMAGE, snapshot=snap, read_only=True) as img:
            return img.read(0, img.size())


def blocks_differing(a: bytes, b: bytes) -> int:
    return sum(a[i : i + BLOCK] != b[i : i + BLOCK] for i in range(0, max(len(a), len(b)), BLOCK))


@pytest.fixture
def setup(cluster: Path, tmp_path: Path) -> Iterator[tuple[Stackvault, Guest, list[str]]]:
    config = tmp_path / "sv.toml"
    config.write_text(f'[ceph]\nconf = "{ceph.conf_path(cluster)}"\nclient = "client.{ceph.PROXY_USER}"\n'
                      f'keyring = "{ceph.keyring_path(cluster, ceph.PROXY_USER)}"\n')
    sv = Stackvault(tmp_path / "sv")
    sv.init("64KiB")
    guest = Guest(cluster)
    guest.create()
    try:
        yield sv, guest, ["--config", str(config)]
    finally:
        guest.remove()
        guest.close()


def test_incrementals_of_rbd_snapshots_read_what_changed_and_restore_exactly(setup, tmp_path: Path) -> None:
    sv, guest, cfg = setup
    started = time.monotonic()

    def backup(snap: str, level: str = "incremental") -> dict:
        report = sv.run("backup", "--source", f"rbd:{ceph.POOL}/{IMAGE}@{snap}", "--level", level,
                        globals_=cfg).data
        assert report["status"] == "success", report
        out = sv.restore("latest", tmp_path / f"{snap}-{level}.raw")
        assert sha256_file(out) == hashlib.sha256(guest.read(snap)).hexdigest(), \
            f"the backup of @{snap} restored other bytes: {report}"
        out.unlink()
        return report["disks"][0]

    # A disk in use: 24 MiB written, scattered writes up to 32 MiB, 32-48 MiB never written.
    for offset in range(0, 24 * MIB, OBJECT):
        guest.write(offset, OBJECT)
    guest.scatter(8, 256 * KIB, below=32 * MIB)
    guest.snap("s1")
    full = backup("s1", "full")
    assert full["level"] == "full" and full["read"] == {"path": "full_read", "why": "a Full reads every block"}
    assert full["bytes_read"] <= 32 * MIB, f"unallocated space is not read: {full}"

    # Overwrites, a discard, and a write into space never written (a new RADOS object).
    guest.scatter(12, 64 * KIB, below=24 * MIB)
    guest.discard(8 * MIB, MIB)
    guest.write(40 * MIB + 100 * KIB, 128 * KIB)
    guest.snap("s2")
    inc = backup("s2")
    assert inc["level"] == "incremental" and inc["reason"] == "", inc
    read = inc["read"]
    assert read["path"] == "changed_blocks" and read["base_snapshot"] == "s1", inc
    assert read["sample_mismatches"] == 0 and read["sample_blocks"] >= 8, inc
    assert read["listing_s"] < 5, inc
    # What librbd lists is read, and the sample; nothing else. The list covers the writes: exactly in
    # objects written through at s1, from the object's start in a new one (block 640 here, all zeros),
    # from the old end of the data in an object that grew (the later writes below 32 MiB).
    changed = blocks_differing(guest.read("s1"), guest.read("s2"))
    assert inc["blocks_changed"] == changed, inc
    listed = guest.listed_blocks("s1", "s2")
    assert read["blocks_listed"] >= listed, inc
    assert inc["bytes_read"] == (listed + read["sample_blocks"]) * BLOCK, (listed, inc)
    assert listed <= changed + 1, f"about the changed blocks: {changed} changed, {listed} listed"
    assert inc["bytes_read"] < SIZE / 4 and inc["bytes_read"] < full["bytes_read"] / 3, \
        f"an Incremental reads what changed, not the image: {inc}"
    backups = sv.run("list", "--source", f"rbd:{ceph.POOL}/{IMAGE}@s2", globals_=cfg).data["backups"]
    assert len(backups) == 2, f"`list --source` finds the image's backups, whatever the snapshot: {backups}"
    shown = sv.run("show", "latest").data["disks"][0]
    assert shown["disk_key"] == inc["disk_key"] == full["disk_key"]
    assert shown["meta"]["rbd"]["snapshot"] == "s2" and isinstance(shown["meta"]["rbd"]["snap_id"], int)
    assert shown["meta"]["rbd"]["image_id"]

    # A Differential diffs from the Full's snapshot.
    guest.scatter(6, 64 * KIB, below=24 * MIB)
    guest.snap("s3")
    diff = backup("s3", "differential")
    assert diff["level"] == "differential" and diff["read"]["path"] == "changed_blocks", diff
    assert diff["read"]["base_snapshot"] == "s1", diff
    assert diff["blocks_changed"] == blocks_differing(guest.read("s1"), guest.read("s3")), diff

    # The newest backup's snapshot is deleted: everything is read, the report says why.
    guest.scatter(6, 64 * KIB, below=24 * MIB)
    guest.snap("s4")
    guest.remove_snap("s3")
    gone = backup("s4")
    assert gone["level"] == "incremental", gone
    assert gone["read"] == {"path": "full_read", "why": "base snapshot s3 no longer exists"}, gone
    assert gone["reason"] == "base snapshot s3 no longer exists: read in full", gone
    assert gone["bytes_read"] >= 16 * MIB, f"read in full (what is allocated): {gone}"
    guest.scatter(4, 64 * KIB, below=24 * MIB)
    guest.snap("s5")
    assert backup("s5")["read"]["path"] == "changed_blocks"

    # Resized: the blocks no longer line up with the earlier index's.
    guest.resize(SIZE + 4 * MIB)
    guest.write(SIZE + MIB, 64 * KIB)
    guest.snap("s6")
    grown = backup("s6")
    assert grown["level"] == "incremental" and grown["size"] == SIZE + 4 * MIB, grown
    assert grown["read"]["why"] == f"image resized from {SIZE} to {SIZE + 4 * MIB} bytes", grown
    assert "disk size changed" in grown["reason"], grown
    guest.scatter(4, 64 * KIB, below=24 * MIB)
    guest.snap("s7")
    back = backup("s7")
    assert back["read"]["path"] == "changed_blocks" and back["bytes_read"] < SIZE / 4, back

    # The base snapshot deleted and made again under its name: it no longer holds what the last backup
    # read, so diffing from it would miss the writes made between the two; everything is read.
    guest.remove_snap("s7")
    guest.scatter(4, 64 * KIB, below=24 * MIB)  # after the backup of s7, before the new s7: in neither diff
    guest.snap("s7")
    guest.scatter(4, 64 * KIB, below=24 * MIB)
    guest.snap("s8")
    remade = backup("s8")
    assert remade["level"] == "incremental" and remade["read"]["path"] == "full_read", remade
    assert remade["read"]["why"].startswith("base snapshot s7 was deleted and made again (id "), remade
    assert remade["bytes_read"] >= 16 * MIB, f"read in full (what is allocated): {remade}"
    guest.scatter(4, 64 * KIB, below=24 * MIB)
    guest.snap("s9")
    assert backup("s9")["read"]["path"] == "changed_blocks"

    # Created again under the same name, with a snapshot of the same name: same disk, no diff base.
    guest.remove()
    guest.create(SIZE + 4 * MIB)
    guest.scatter(8, 256 * KIB, below=16 * MIB)
    guest.snap("s9")
    again = backup("s9")
    assert again["disk_key"] == full["disk_key"], again
    assert again["read"]["path"] == "full_read" and "was created again" in again["read"]["why"], again
    print(f"\nrbd changed-block test: {time.monotonic() - started:.1f} s; Full read {full['bytes_read'] / MIB:.2f} "
          f"MiB, Incremental {inc['bytes_read'] / MIB:.2f} MiB ({changed} blocks changed, {listed} listed, "
          f"{read['sample_blocks']} sampled) of a {SIZE / MIB:.0f} MiB image, "
          f"listing {read['listing_s'] * 1000:.1f} ms; "
          f"after a deleted base snapshot {gone['bytes_read'] / MIB:.2f} MiB")


def test_the_changed_block_list_turned_off_reads_the_image_in_full(setup, tmp_path: Path) -> None:
    sv, guest, cfg = setup
    source = f"rbd:{ceph.POOL}/{IMAGE}@"
    for offset in range(0, 16 * MIB, OBJECT):
        guest.write(offset, OBJECT)
    guest.snap("s1")
    sv.run("backup", "--source", source + "s1", "--level", "full", globals_=cfg)
    guest.scatter(4, 64 * KIB, below=16 * MIB)
    guest.snap("s2")
    off = sv.run("backup", "--source", source + "s2", "--no-changed-blocks", globals_=cfg).data["disks"][0]
    assert off["level"] == "incremental", off
    assert off["read"] == {"path": "full_read", "why": CHANGED_BLOCKS_OFF}, off
    assert off["reason"] == f"{CHANGED_BLOCKS_OFF}: read in full", off
    assert off["bytes_read"] >= 16 * MIB and off["blocks_changed"] >= 1, off
    out = sv.restore("latest", tmp_path / "s2.raw")
    assert sha256_file(out) == hashlib.sha256(guest.read("s2")).hexdigest()
    config = Path(cfg[1])  # the same, from the config file
    config.write_text(config.read_text() + "changed_blocks = false\n")
    guest.scatter(4, 64 * KIB, below=16 * MIB)
    guest.snap("s3")
    again = sv.run("backup", "--source", source + "s3", globals_=cfg).data["disks"][0]
    assert again["read"]["why"] == CHANGED_BLOCKS_OFF, again
    config.write_text(config.read_text().replace("changed_blocks = false\n", ""))
    guest.scatter(4, 64 * KIB, below=16 * MIB)
    guest.snap("s4")
    back = sv.run("backup", "--source", source + "s4", globals_=cfg).data["disks"][0]
    assert back["read"]["path"] == "changed_blocks" and back["bytes_read"] < 8 * MIB, back


def test_an_rbd_source_that_cannot_be_opened_is_one_error_line(setup) -> None:
    sv, guest, cfg = setup
    guest.snap("s1")
    res = sv.run("backup", "--source", f"rbd:{ceph.POOL}/{IMAGE}@nope", globals_=cfg, expect=None)
    one_error(res, "cannot open rbd source", f"{ceph.POOL}/{IMAGE}@nope", "client.stackvault", rc=2)
    res = sv.run("backup", "--source", f"rbd:{ceph.POOL}/{IMAGE}", globals_=cfg, expect=None)
    one_error(res, "POOL/IMAGE@SNAPSHOT", rc=2)


def test_the_listing_is_the_same_with_and_without_fast_diff(cluster: Path) -> None:
    """With fast-diff the source lists exactly only inside the objects the object maps call changed;
    that must give the extents an exact listing of the whole image gives, writes into never-written
    objects, overwrites across an object boundary and discards included."""
    guest = Guest(cluster)
    names = {"fast-diff": f"{IMAGE}-fd", "layering only": f"{IMAGE}-plain"}
    listed: dict[str, list[tuple[int, int, bool]]] = {}
    try:
        for what, name in names.items():
            features = None if what == "fast-diff" else guest.rbd.RBD_FEATURE_LAYERING
            guest.rbd.RBD().create(guest.ioctx, name, SIZE, features=features)
            rng = random.Random(7)
            with guest.rbd.Image(guest.ioctx, name) as img:
                assert bool(img.features() & guest.rbd.RBD_FEATURE_FAST_DIFF) == (what == "fast-diff")
                for k in range(0, SIZE, 2 * OBJECT):
                    img.write(rng.randbytes(OBJECT), k)
                img.create_snap("s1")
                img.write(rng.randbytes(64 * KIB), 3 * OBJECT + 100 * KIB)  # into a never-written object
                img.write(rng.randbytes(128 * KIB), 3 * OBJECT - 64 * KIB)  # across an object boundary
                img.write(rng.randbytes(4 * KIB), 8 * OBJECT + 12 * KIB)  # an overwrite
                img.discard(4 * OBJECT, OBJECT + 512 * KIB)
                img.create_snap("s2")
            source = open_rbd(f"{ceph.POOL}/{name}@s2", str(ceph.conf_path(cluster)), f"client.{ceph.PROXY_USER}",
                              str(ceph.keyring_path(cluster, ceph.PROXY_USER)))
            extents: list[tuple[int, int, bool]] = []
            try:
                assert source.changed_extents(source.meta | {"rbd": {**source.meta["rbd"], "snapshot": "s1",
                                                                     "snap_id": source._snap_ids()["s1"]}},
                                              lambda *e, out=extents: out.append(e)) is None
            finally:
                source.close()
            exact: list[tuple[int, int, bool]] = []
            with guest.rbd.Image(guest.proxy_ioctx, name, snapshot="s2", read_only=True) as img:
                img.diff_iterate(0, SIZE, "s1", lambda *e, out=exact: out.append(e), whole_object=False)
            assert extents == exact, what
            listed[what] = extents
        assert listed["fast-diff"] == listed["layering only"]
        # a new object is listed from its start to the highest byte written; the discard ends where
        # the image held data
        assert listed["fast-diff"] == [(3 * OBJECT - 64 * KIB, 64 * KIB, True), (3 * OBJECT, 164 * KIB, True),
                                       (4 * OBJECT, OBJECT, False), (8 * OBJECT + 12 * KIB, 4 * KIB, True)]
    finally:
        for name in names.values():
            with guest.rbd.Image(guest.ioctx, name) as img:
                for snap in list(img.list_snaps()):
                    img.remove_snap(snap["name"])
            guest.rbd.RBD().remove(guest.ioctx, name)
        guest.close()
