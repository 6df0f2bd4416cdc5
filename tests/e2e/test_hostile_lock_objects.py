"""A lock object that is no lock this proxy can read stops no command for longer than a lease.

Planted by the store or left by a broken proxy (`[]`, a null pid, a huge pid on this host, bytes
that fail authentication in an encrypted repository), it once made backup, restore, verify, prune
and gc fail with a traceback, and nothing removed it. It is now a lock of unknown owner: obeyed as
exclusive while the object is younger than a lease, stale after that (prune and gc remove it), and
each command names it in a warning.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, one_error, sha256_file
from .test_encryption import EncryptedSv

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow

KEY = "locks/1700000000-planted.json"
#: Older than any lease (120 s): what a proxy that wrote it and died leaves behind.
OLD_S = 3600

PLANTED = {
    "empty-list": b"[]",
    "null-pid": json.dumps({"kind": "exclusive", "host": socket.gethostname(), "pid": None, "job": "x",
                            "expires": time.time() + 10 ** 6}).encode(),
    "huge-pid-here": json.dumps({"kind": "exclusive", "host": socket.gethostname(), "pid": 10 ** 30, "job": "x",
                                 "expires": time.time() + 10 ** 6}).encode(),
    "not-json": b"\xff\xfe garbage",
}


def _plant(sv: Stackvault, body: bytes, age_s: float) -> Path:
    path = sv.repo / KEY
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(body)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _named(res) -> None:
    warnings = [line for line in res.stderr.splitlines() if line.startswith("stackvault: warning:")]
    assert any(KEY in line for line in warnings), res.describe()
    assert "Traceback" not in res.stderr, res.describe()


def _every_command_works(sv: Stackvault, tmp_path: Path, body: bytes) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(4))
    planted = _plant(sv, body, OLD_S)
    started = time.monotonic()
    res = sv.run("backup", "--source", f"file:{src}")
    _named(res)
    bid = res.data["backup_id"]
    res = sv.run("restore", bid, "--to", f"file:{tmp_path / 'out.raw'}")
    _named(res)
    assert sha256_file(tmp_path / "out.raw") == sha256_file(src)
    res = sv.run("verify")
    _named(res)
    assert res.data["ok"], res.describe()
    res = sv.run("prune", "--keep-last", "1")
    _named(res)
    assert not planted.exists(), "prune must remove a stale lock object"
    _plant(sv, body, OLD_S)
    _named(sv.run("gc"))
    assert not planted.exists(), "gc must remove a stale lock object"
    assert sv.list_ids() == [bid]
    assert time.monotonic() - started < 120, "no command may wait for a stale lock object"


@pytest.mark.parametrize("body", PLANTED.values(), ids=PLANTED.keys())
def test_a_stale_unreadable_lock_stops_no_command(repo: Stackvault, tmp_path: Path, body: bytes) -> None:
    _every_command_works(repo, tmp_path, body)


def test_a_stale_garbage_lock_in_an_encrypted_repository_stops_no_command(tmp_path: Path) -> None:
    esv = EncryptedSv(tmp_path / "sv")
    esv.run("init", "--encrypt", "--block-size", "64KiB")
    _every_command_works(esv, tmp_path, os.urandom(200))


@pytest.mark.parametrize("body", PLANTED.values(), ids=PLANTED.keys())
def test_a_young_unreadable_lock_is_waited_for_as_a_live_lock(repo: Stackvault, tmp_path: Path, body: bytes) -> None:
    src = make_random_image(tmp_path / "d.img", MIB, random.Random(4))
    planted = _plant(repo, body, 0)
    for args in (["backup", "--source", f"file:{src}"], ["verify"], ["prune", "--keep-last", "1"], ["gc"]):
        res = repo.run(*args, expect=None)
        one_error(res, "locked", KEY, rc=75)
        _named(res)
    assert planted.exists(), "a young lock object is not removed"
    assert repo.list_ids() == []
