"""Sources a tenant or a careless operator can hand the proxy.

A guest owns every byte of its disk, so a header it writes there must never choose what the proxy
reads: a raw disk is backed up as the raw bytes it holds, and an image that names another file
(backing file, external data file, vmdk extents) is refused unless the operator says it trusts it.
What is not a disk at all (a named pipe, /dev/zero, a directory, a path that is not UTF-8) is one
clear error line, exit 2, and nothing written to the repository.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, qemu_img, sha256_file, tree_listing
from .test_bad_input import assert_clear_error


@pytest.fixture
def host_secret(tmp_path: Path) -> bytes:
    """A file of the proxy that no tenant may read (its keys, another project's disk...)."""
    secret = os.urandom(64 << 10)
    (tmp_path / "proxy-secret").write_bytes(secret)
    return secret


def _overlay_of(target: Path, path: Path) -> Path:
    """A small qcow2 whose backing file is `target`, as a guest can write it at the start of its disk."""
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(target), str(path), str(MIB))
    return path


def test_a_raw_disk_holding_a_qcow2_header_is_backed_up_as_its_raw_bytes(repo: Stackvault, tmp_path: Path,
                                                                          host_secret: bytes) -> None:
    header = _overlay_of(tmp_path / "proxy-secret", tmp_path / "header.qcow2").read_bytes()
    disk = tmp_path / "guest-disk.raw"
    with open(disk, "wb") as f:
        f.truncate(4 * MIB)
        f.write(header)  # what a guest writes at the start of its own (raw) disk
    report = repo.backup(f"file:{disk}", level="full")
    assert report["disks"][0]["size"] == 4 * MIB, report
    out = repo.restore(report["backup_id"], tmp_path / "out.raw")
    assert sha256_file(out) == sha256_file(disk), "the backup holds the disk's bytes, not what its header names"
    assert host_secret[:4096] not in out.read_bytes()


def _external_data_file(tmp_path: Path) -> Path:
    img = tmp_path / "image.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'proxy-secret'},data_file_raw=on",
             str(img), str(64 << 10))
    return img


def _vmdk_with_extent(tmp_path: Path) -> Path:
    """A vmdk descriptor whose extent is a file of the proxy."""
    img = tmp_path / "image.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(img), str(64 << 10))
    text = img.read_text()
    img.write_text(text.replace('"image-flat.vmdk"', f'"{tmp_path / "proxy-secret"}"'))
    assert str(tmp_path / "proxy-secret") in img.read_text()
    return img


REFERENCES = {
    "backing file": lambda tmp: ("qcow2", _overlay_of(tmp / "proxy-secret", tmp / "image.qcow2")),
    "external data file": lambda tmp: ("qcow2", _external_data_file(tmp)),
    "vmdk extent": lambda tmp: ("vmdk", _vmdk_with_extent(tmp)),
}


@pytest.mark.parametrize("what", REFERENCES)
def test_an_image_naming_another_file_is_refused(repo: Stackvault, tmp_path: Path, host_secret: bytes,
                                                 what: str) -> None:
    fmt, image = REFERENCES[what](tmp_path)
    before = tree_listing(repo.repo)
    res = repo.run("backup", "--source", f"{fmt}:{image}", "--level", "full", expect=None, timeout=120)
    assert_clear_error(res, "image refused", "refers to another file", f"{fmt}+backing:")
    assert tree_listing(repo.repo) == before, "nothing may be written to the repository"
    assert repo.repository_ids() == []


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return f"file:{path}"


def _not_utf8(tmp_path: Path) -> str:
    path = os.fsencode(tmp_path) + b"/disk-\xff\xfe.img"
    with open(path, "wb") as f:
        f.write(os.urandom(MIB))
    return "file:" + os.fsdecode(path)


def _link_to_not_utf8(tmp_path: Path) -> str:
    target = _not_utf8(tmp_path)[len("file:"):]
    os.symlink(target, tmp_path / "disk.img")
    return f"file:{tmp_path / 'disk.img'}"


BAD_SOURCES = {
    "a named pipe": (_fifo, "named pipe"),
    "/dev/zero": (lambda tmp: "file:/dev/zero", "character device"),
    "/dev/null": (lambda tmp: "file:/dev/null", "character device"),
    "/dev/null as qcow2": (lambda tmp: "qcow2:/dev/null", "character device"),
    "a directory": (lambda tmp: f"file:{tmp}", "directory"),
    "a path that is not UTF-8": (_not_utf8, "not valid UTF-8"),
    "a link to a path that is not UTF-8": (_link_to_not_utf8, "not valid UTF-8"),
}


@pytest.mark.parametrize("what", BAD_SOURCES)
def test_what_is_not_a_disk_is_one_clear_error_and_nothing_is_written(repo: Stackvault, tmp_path: Path,
                                                                       what: str) -> None:
    make, words = BAD_SOURCES[what]
    before = tree_listing(repo.repo)
    started = time.monotonic()
    res = repo.run("backup", "--source", make(tmp_path), "--level", "full", expect=None, timeout=60)
    assert time.monotonic() - started < 60
    assert_clear_error(res, words)
    assert tree_listing(repo.repo) == before, "nothing may be written to the repository"
    assert repo.run("list").data["backups"] == []


# ---- the proxy's helper programs ----------------------------------------------------------------------

SECRETS = {"STACKVAULT_PASSPHRASE": "correct horse battery staple", "OS_PASSWORD": "cloud-password",
           "OS_APPLICATION_CREDENTIAL_SECRET": "app-cred", "AWS_SECRET_ACCESS_KEY": "s3-key", "ST_KEY": "swift-key"}


class SecretHolder(Stackvault):
    """An operator whose environment holds every kind of secret, with a temporary directory of its own."""

    def env(self) -> dict[str, str]:
        (self.root / "tmp").mkdir(exist_ok=True)
        return {**super().env(), **SECRETS, "TMPDIR": str(self.root / "tmp")}


def _children_named(parent: int, name: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name", "").strip() == name and int(fields.get("PPid", "0")) == parent:
            found.append(int(pid))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def big_qcow2(tmp_path: Path) -> Path:
    """A qcow2 image whose backup takes long enough to watch (and kill) while qemu-nbd serves it."""
    raw = make_random_image(tmp_path / "disk.raw", 192 * MIB, random.Random(9))
    qcow = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow))
    raw.unlink()
    return qcow


def _backup_serving(sv: Stackvault, qcow: Path) -> tuple[subprocess.Popen, list[int]]:
    """A running backup of `qcow` and its qemu-nbd children, once they are there."""
    proc = sv.popen("backup", "--source", f"qcow2:{qcow}", "--level", "full")
    deadline = time.monotonic() + 60
    servers: list[int] = []
    while not servers and proc.poll() is None and time.monotonic() < deadline:
        servers = _children_named(proc.pid, "qemu-nbd")
        time.sleep(0.005)
    assert servers, f"no qemu-nbd child seen: {proc.communicate()}"
    return proc, servers


def test_helper_programs_see_no_secret(tmp_path: Path, big_qcow2: Path) -> None:
    sv = SecretHolder(tmp_path / "sv")
    sv.run("init", "--encrypt", "--block-size", "64KiB")
    proc, servers = _backup_serving(sv, big_qcow2)
    try:
        environ = Path(f"/proc/{servers[0]}/environ").read_bytes().split(b"\0")
    finally:
        proc.kill()
        proc.communicate()
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert not names & set(SECRETS), f"qemu-nbd was given secrets: {sorted(names & set(SECRETS))}"


def test_a_killed_backup_leaves_no_qemu_nbd_and_no_socket_dir(tmp_path: Path, big_qcow2: Path) -> None:
    sv = SecretHolder(tmp_path / "sv")
    sv.run("init", "--encrypt", "--block-size", "64KiB")  # its passphrase is in the environment
    orphans: list[int] = []
    for _attempt in range(2):
        proc, servers = _backup_serving(sv, big_qcow2)
        os.kill(proc.pid, signal.SIGKILL)  # the backup alone, as `kill -9 <pid>` does; not its group
        proc.communicate()
        deadline = time.monotonic() + 10
        while any(map(_alive, servers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans += [pid for pid in servers if _alive(pid)]
    for pid in orphans:  # leave the machine clean even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"qemu-nbd outlived its killed backup: {orphans}"

    sv.backup(f"qcow2:{big_qcow2}", level="full")  # the next run
    left = [p.name for p in (sv.root / "tmp").iterdir() if p.name.startswith("sv-nbd-")]
    assert left == [], f"socket dirs outlived the job that made them: {left}"


def test_an_image_claiming_a_huge_virtual_size_is_refused(repo: Stackvault, tmp_path: Path) -> None:
    """A 2 MiB qcow2 saying it is a 100 TiB disk: the proxy would size its indexes for it."""
    img = tmp_path / "huge.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(img), str(100 << 40))
    assert img.stat().st_size < 4 * MIB
    before = tree_listing(repo.repo)
    started = time.monotonic()
    res = repo.run("backup", "--source", f"qcow2:{img}", "--level", "full", expect=None, timeout=120)
    assert_clear_error(res, "image refused", "virtual size")
    assert time.monotonic() - started < 60
    assert tree_listing(repo.repo) == before
