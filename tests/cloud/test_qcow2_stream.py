"""qcow2 images come out of the dev cloud's Glance streamed, with no local copy (the server
backup's speed target); one the stream reader refuses is still read, from a local copy; a download
that does not match the hash Glance recorded fails when the last block was read, before anything
could commit.

(The server tests cover the whole backup: the dev cloud's Nova snapshots are qcow2, so every
image-backed server backup in test_server_backup.py goes through the stream reader too.)
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from stackvault.cloud.transfer import GlanceQcow2Source, open_image_source
from stackvault.engine.sources import DiskSource, QemuSource
from stackvault.errors import SourceError

from .conftest import same_disk

pytestmark = pytest.mark.devcloud
MiB = 1 << 20


def _qcow2(path: Path, *options: str) -> Path:
    """A 24 MiB disk written out of guest order, as a guest would: data arrives before it is needed."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *(("-o", ",".join(options)) if options else ()),
                    str(path), str(24 * MiB)], check=True)
    writes = ["write -P 0x5a 20M 2M", "write -P 0x11 0 1M", "write -P 0x22 9M 3M", "write -z 10M 64k"]
    subprocess.run(["qemu-io", "-f", "qcow2", *(a for w in writes for a in ("-c", w)), str(path)],
                   check=True, capture_output=True)
    return path


@pytest.fixture
def upload(conn):
    """Uploads a qcow2 file to Glance as a private image; deletes the images after the test."""
    made = []

    def put(path: Path):
        image = conn.image.create_image(name=f"sv-qcow2-stream-{uuid.uuid4().hex[:6]}", disk_format="qcow2",
                                        container_format="bare", data=path.read_bytes(), visibility="private")
        made.append(image)
        return conn.image.wait_for_status(conn.image.get_image(image.id), "active", wait=120)

    yield put
    for image in made:
        conn.image.delete_image(image, ignore_missing=True)


def _read_back(conn, image, disk: Path, tmp_path: Path) -> DiskSource:
    """Open the image as a server backup does, check every guest byte against `disk`, close it."""
    source = open_image_source(conn, image, name="vda", key="test:vda", tmpdir=str(tmp_path / "job-tmp"))
    try:
        assert same_disk(_read_like_the_engine(source, tmp_path / "read.raw"), disk)
    finally:
        source.close()
    return source


def _read_like_the_engine(source: DiskSource, dest: Path, block: int = 512 << 10) -> Path:
    """data_extents(), every block in guest order, finish(): what DiskBackup does, into a raw file."""
    extents = source.data_extents()
    with open(dest, "wb") as f:
        f.truncate(source.size)
        for off in range(0, source.size, block):
            length = min(block, source.size - off)
            if any(s < off + length and off < s + n for s, n in extents):
                f.seek(off)
                f.write(source.read(off, length))
    source.finish()
    return dest


def test_a_qcow2_image_streams_from_glance_with_no_local_copy(conn, upload, tmp_path: Path) -> None:
    disk = _qcow2(tmp_path / "disk.qcow2")
    source = _read_back(conn, upload(disk), disk, tmp_path)
    assert isinstance(source, GlanceQcow2Source)
    assert source.spilled_bytes == 0
    tmpdir = tmp_path / "job-tmp"
    assert not tmpdir.exists() or not os.listdir(tmpdir), "nothing was written to the job's tmpdir"


def test_a_qcow2_the_stream_reader_refuses_is_read_from_a_local_copy(conn, upload, tmp_path: Path) -> None:
    disk = _qcow2(tmp_path / "disk.qcow2")
    with open(disk, "r+b") as f:  # flagged corrupt (incompatible feature bit 1): Glance takes it, qemu reads
        f.seek(79)               # it read-only, the stream reader refuses it
        flags = f.read(1)[0]
        f.seek(79)
        f.write(bytes((flags | 2,)))
    source = _read_back(conn, upload(disk), disk, tmp_path)
    assert isinstance(source, QemuSource)
    assert not os.listdir(tmp_path / "job-tmp"), "the local copy is gone once the source is closed"


def test_a_streamed_qcow2_not_matching_its_glance_hash_fails_at_finish(conn, upload, tmp_path: Path) -> None:
    image = upload(_qcow2(tmp_path / "disk.qcow2"))
    image.hash_value = "0" * len(image.hash_value)  # what Glance recorded no longer matches the bytes
    source = open_image_source(conn, image, name="vda", key="test:vda", tmpdir=str(tmp_path / "job-tmp"))
    try:
        with pytest.raises(SourceError, match=f"download of image {image.id} does not match its checksum"):
            _read_like_the_engine(source, tmp_path / "read.raw")
    finally:
        source.close()
