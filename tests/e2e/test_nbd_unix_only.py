"""`serve-nbd` listens on a 0600 Unix socket only and serves a bounded number of clients at once.

NBD has no authentication: a TCP port, even on 127.0.0.1, would let any local user read a tenant's
disk, so every TCP address is refused with one line naming the Unix socket. A local client that
opens connection after connection is hung up on past the cap, and the export goes on serving.
"""

from __future__ import annotations

import random
import socket
import stat
import time
from pathlib import Path

from .helpers import MIB, Stackvault, make_sparse_image, one_error, sha256_file
from .test_nbd_export import _export_to_file, exported

MAX_CONNECTIONS = 8  # the documented cap


def _disk(path: Path, rng: random.Random) -> Path:
    return make_sparse_image(path, 4 * MIB, rng, [(0, 1 * MIB, "random"), (3 * MIB, 512 * 1024, "text")])


def test_a_tcp_address_is_refused(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    bid = repo.backup(_disk(tmp_path / "disk.raw", rng))["backup_id"]
    for address in ("127.0.0.1:10809", "[::1]:10809", "localhost:10809"):
        res = repo.run("serve-nbd", bid, "--socket", address, expect=None, timeout=60)
        one_error(res, address, "Unix socket", rc=2)


def _greeted(sock: Path) -> socket.socket | None:
    """A connection that received the server's greeting, or None when the server hung up."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(sock))
    got = b""
    while len(got) < 18:
        piece = s.recv(18 - len(got))
        if not piece:
            s.close()
            return None
        got += piece
    return s


def test_connections_beyond_the_cap_are_hung_up_on(repo: Stackvault, tmp_path: Path, rng: random.Random) -> None:
    img = _disk(tmp_path / "disk.raw", rng)
    bid = repo.backup(img)["backup_id"]
    sock = tmp_path / "nbd.sock"
    with exported(repo, bid, sock):
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        held = [_greeted(sock) for _ in range(MAX_CONNECTIONS)]
        try:
            assert all(held), "connections up to the cap are served"
            assert _greeted(sock) is None, "a connection past the cap is hung up on"
            assert _greeted(sock) is None
        finally:
            for s in held:
                if s is not None:
                    s.close()
        deadline = time.monotonic() + 30  # the server notices the closed connections
        while (s := _greeted(sock)) is None:
            assert time.monotonic() < deadline, "a slot never came free after clients left"
            time.sleep(0.1)
        s.close()
        out = _export_to_file(sock, tmp_path / "exported.raw")
    assert sha256_file(out) == sha256_file(img)
