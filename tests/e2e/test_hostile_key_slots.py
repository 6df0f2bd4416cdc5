"""Key slots are written by the store, so they are hostile input: a planted slot cannot crash a
command, make it take all memory, or make unlocking slow; it is skipped with a warning."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackvault.engine import keys
from stackvault.engine.crypto import canonical_checksum

from .test_encryption import PASSPHRASE, EncryptedSv

#: A command that opens an encrypted repository holds scrypt's 64 MiB plus the interpreter.
RSS_LIMIT = 400 << 20


def _slot(repo_id: str, **changes: object) -> dict:
    """A well-formed slot (cheap scrypt, another passphrase), then `changes` to its KDF or fields,
    with its checksum made to hold again: what a store planting slots writes."""
    doc = keys.new_slot(repo_id, bytes(32), "not the passphrase", n=1 << 10, r=8, p=1)
    for name, value in changes.items():
        if name in ("n", "r", "p", "salt"):
            doc["kdf"][name] = value
        elif name == "kdf":
            doc["kdf"] = value
        else:
            doc[name] = value
    doc.pop("checksum")
    doc["checksum"] = canonical_checksum(doc)
    return doc


HOSTILE = {
    "huge n": {"n": 1 << 22},
    "too much memory": {"n": 1 << 20, "r": 16},
    "too much work": {"n": 1 << 19, "r": 8, "p": 16},
    "n as text": {"n": "65536"},
    "r as float": {"r": 8.0},
    "p as bool": {"p": True},
    "version as text": {"version": "one"},
    "kdf a list": {"kdf": [1, 2]},
    "salt not base64": {"salt": "%%%"},
    "nonce a list": {"nonce": [1]},
    "wrapped too long": {"wrapped": "QUFB" * 400},
}


def _plant(esv: EncryptedSv, docs: list[dict]) -> None:
    for i, doc in enumerate(docs):
        (esv.repo / "keys" / f"{i:04x}{'0' * 12}.json").write_text(json.dumps(doc))


def _run_measured(esv: EncryptedSv, *args: str) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run the CLI in a child of a fresh interpreter: (result, the child's peak RSS in bytes, seconds)."""
    probe = ("import resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
             "print(json.dumps([p.returncode, p.stdout, p.stderr,"
             " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", probe, *esv.argv(list(args))], capture_output=True, text=True,
                         env=esv.env(), timeout=300, check=True)
    rc, stdout, stderr, maxrss_kib = json.loads(out.stdout)
    return subprocess.CompletedProcess(args, rc, stdout, stderr), maxrss_kib * 1024, time.monotonic() - started


@pytest.fixture
def esv(tmp_path: Path) -> EncryptedSv:
    esv = EncryptedSv(tmp_path / "sv")
    esv.run("init", "--block-size", "64KiB", "--encrypt")
    return esv


def test_planted_slots_are_skipped_with_a_warning_in_bounded_memory_and_time(esv: EncryptedSv) -> None:
    repo_id = json.loads((esv.repo / "config").read_bytes())["id"]
    _plant(esv, [_slot(repo_id, **change) for change in HOSTILE.values()])
    res, rss, seconds = _run_measured(esv, "list")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("stackvault: warning: key slot")]
    assert len(warnings) == len(HOSTILE), res.stderr
    assert rss < RSS_LIMIT, f"unlocking peaked at {rss >> 20} MiB"
    assert seconds < 60, f"unlocking took {seconds:.0f} s"
    listed = esv.run("key", "list").data["keys"]
    assert sum(k["status"] == "ok" for k in listed) == 1 and len(listed) == 1 + len(HOSTILE)


def test_many_planted_slots_cannot_make_unlocking_slow(esv: EncryptedSv) -> None:
    """Well-formed slots of another passphrase, by the hundred: at most a bounded number is tried."""
    repo_id = json.loads((esv.repo / "config").read_bytes())["id"]
    _plant(esv, [_slot(repo_id, n=1 << 14) for _ in range(200)])
    wrong = EncryptedSv(esv.root, passphrase="wrong passphrase")
    started = time.monotonic()
    res = wrong.run("list", expect=None)
    seconds = time.monotonic() - started
    assert res.rc == 2 and len(res.error_lines()) == 1, res.describe()
    assert "not tried" in res.error_lines()[0], res.describe()
    assert seconds < 60, f"a wrong passphrase took {seconds:.0f} s to refuse"
    # The right passphrase: the planted slots are cheaper, so tried first; the bound holds either way
    # (a store can always deny access, e.g. by deleting the slot: it cannot make the proxy hang).
    started = time.monotonic()
    res = esv.run("list", expect=None)
    assert res.rc in (0, 2) and "Traceback" not in res.stderr, res.describe()
    assert time.monotonic() - started < 60


def test_passphrase_still_opens_after_planting(esv: EncryptedSv) -> None:
    assert EncryptedSv(esv.root, passphrase=PASSPHRASE).run("list").rc == 0
