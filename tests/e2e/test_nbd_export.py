"""`serve-nbd`: a backup's disk read in place over NBD equals what `restore --to file:` writes.

qemu-img (a real NBD client) reads the export; the export serves a plain and an encrypted
repository through the same Repository object, refuses writes, listens on nothing but a Unix socket,
and says one line for a backup that does not exist.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .helpers import KIB, MIB, Stackvault, make_sparse_image, one_error, sha256_file

PASSPHRASE = "nbd export passphrase"


def _disk(path: Path, rng: random.Random) -> Path:
    return make_sparse_image(path, 12 * MIB, rng, [
        (0, 1 * MIB, "random"), (3 * MIB + 1000, 300 * KIB, "text"), (7 * MIB, 1 * MIB, "zero"),
        (11 * MIB, 1 * MIB, "random"),
    ])


@contextmanager
def exported(sv: Stackvault, backup_id: str, sock: Path, *extra: str) -> Iterator[dict]:
    """`serve-nbd` running until the block ends; stopped with SIGTERM like a service manager would.
    The yielded dict receives the command's report once it stopped."""
    proc = sv.popen("serve-nbd", backup_id, "--socket", str(sock), *extra)
    deadline = time.monotonic() + 60
    while not _answers(sock):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "serve-nbd did not start listening within 60 s"
        time.sleep(0.05)
    report: dict = {}
    try:
        yield report
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (out, err)
        assert not sock.exists(), "serve-nbd left its socket behind"
        report.update(json.loads(out))


def _answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def _export_to_file(sock: Path, out: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", f"nbd+unix:///?socket={sock}", str(out)],
                   check=True, capture_output=True, timeout=120)
    return out


def test_export_equals_restore(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    img = _disk(tmp_path / "disk.raw", rng)
    bid = repo.backup(img, level="full")["backup_id"]
    restored = repo.restore(bid, tmp_path / "restored.raw")
    sock = tmp_path / "nbd.sock"
    with exported(repo, bid, sock) as report:
        assert os.stat(sock).st_mode & 0o077 == 0, "the socket must be the proxy user's alone"
        exported_img = _export_to_file(sock, tmp_path / "exported.raw")
        # a write over the wire is refused: the export is read-only whatever the client tries
        w = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4096", f"nbd+unix:///?socket={sock}"],
                           capture_output=True, text=True, timeout=60)
        assert w.returncode != 0 or "error" in (w.stdout + w.stderr).lower(), w
    assert sha256_file(exported_img) == sha256_file(restored) == sha256_file(img)
    # the holes (150 of the 192 blocks) cost no repository read: only the data blocks were fetched
    assert 0 < report["blocks_fetched"] <= 42, report


def test_export_of_an_encrypted_repository(tmp_path: Path, rng: random.Random) -> None:
    sv = _WithPassphrase(tmp_path / "sv")
    sv.run("init", "--encrypt", "--block-size", "64KiB")
    img = _disk(tmp_path / "disk.raw", rng)
    bid = sv.backup(img)["backup_id"]
    with exported(sv, bid, tmp_path / "nbd.sock"):
        out = _export_to_file(tmp_path / "nbd.sock", tmp_path / "exported.raw")
    assert sha256_file(out) == sha256_file(img)


class _WithPassphrase(Stackvault):
    def env(self) -> dict[str, str]:
        return {**super().env(), "STACKVAULT_PASSPHRASE": PASSPHRASE}


def test_a_hostile_client_ends_only_its_own_connection(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    """Garbage, a huge option length, a read past the end: each connection that sends one ends
    (or gets an error), and the export goes on serving the next client the right bytes."""
    img = _disk(tmp_path / "disk.raw", rng)
    bid = repo.backup(img)["backup_id"]
    sock = tmp_path / "nbd.sock"
    with exported(repo, bid, sock):
        for payload in (os.urandom(4096), b"\0\0\0\3" + b"IHAVEOPT" + struct.pack(">II", 7, 0xFFFFFFFF)):
            assert _reply_to(sock, payload) == b"", "the server hangs up on a broken handshake"
        past_the_end = (b"\0\0\0\3" + b"IHAVEOPT" + struct.pack(">II", 1, 0)
                        + struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 1 << 40, 1 << 30))
        reply = _reply_to(sock, past_the_end, want=10 + 16)[10:]
        assert struct.unpack(">IIQ", reply) == (0x67446698, errno.EINVAL, 7), reply
        out = _export_to_file(sock, tmp_path / "exported.raw")
    assert sha256_file(out) == sha256_file(img)


def _reply_to(sock: Path, payload: bytes, want: int | None = None) -> bytes:
    """What the server sends after its greeting in answer to `payload`: everything until it hangs
    up, or the first `want` bytes."""
    got = b""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock))
        s.recv(18)
        s.sendall(payload)
        try:
            while want is None or len(got) < want:
                piece = s.recv(65536)
                if not piece:
                    break
                got += piece
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"the server neither answered nor hung up: {got!r}") from None
    return got


def test_bad_input_is_one_line(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    bid = repo.backup(_disk(tmp_path / "disk.raw", rng))["backup_id"]
    res = repo.run("serve-nbd", "nosuchbackup", "--socket", tmp_path / "s", expect=None, timeout=60)
    one_error(res, "nosuchbackup", rc=2)
    for address in ("0.0.0.0:10809", "127.0.0.1:10809", "[::1]:10809"):
        res = repo.run("serve-nbd", bid, "--socket", address, expect=None, timeout=60)
        one_error(res, "Unix socket", rc=2)
    res = repo.run("serve-nbd", bid, "--disk", "nosuchdisk", "--socket", tmp_path / "s", expect=None, timeout=60)
    one_error(res, "nosuchdisk", rc=2)
    assert not (tmp_path / "s").exists()
