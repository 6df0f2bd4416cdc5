"""Encryption at rest through the CLI: what a user of an encrypted repository sees, and what the store sees.

The store must see no plaintext and no content fingerprint; the user must get byte-identical restores,
clear errors for a wrong or missing passphrase (with nothing written), working key slots, and every
altered object named.
"""

from __future__ import annotations

import json
import os
import pty
import random
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import zstandard

from .helpers import (
    BLOCK,
    KIB,
    MIB,
    Stackvault,
    change_blocks,
    make_random_image,
    one_error,
    sha256_file,
    stackvault_command,
    tree_listing,
)

PASSPHRASE = "correct horse battery staple"
#: A compressible block a user would recognise, and an incompressible one: neither may be readable in the store.
KNOWN_TEXT = (b"stackvault known plaintext: Lorem ipsum dolor sit amet, consectetur adipiscing. " * 1000)[:BLOCK]


@dataclass
class EncryptedSv(Stackvault):
    """A user who exports STACKVAULT_PASSPHRASE (None: no passphrase in the environment at all)."""

    passphrase: str | None = PASSPHRASE
    new_passphrase: str | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.passphrase is not None:
            env["STACKVAULT_PASSPHRASE"] = self.passphrase
        if self.new_passphrase is not None:
            env["STACKVAULT_NEW_PASSPHRASE"] = self.new_passphrase
        return env


@pytest.fixture
def esv(tmp_path: Path) -> EncryptedSv:
    sv = EncryptedSv(tmp_path / "sv")
    res = sv.run("init", "--encrypt", "--block-size", "64KiB")
    assert res.data["encrypted"] is True
    return sv


def image_with_known_blocks(path: Path, rng: random.Random) -> tuple[Path, bytes]:
    """4 MiB: random data, one block of known text, one of known random bytes, one of zeros."""
    make_random_image(path, 4 * MIB, rng)
    secret_random = rng.randbytes(BLOCK)
    with open(path, "r+b") as f:
        f.seek(5 * BLOCK)
        f.write(KNOWN_TEXT)
        f.seek(9 * BLOCK)
        f.write(secret_random)
        f.seek(12 * BLOCK)
        f.write(bytes(BLOCK))
    return path, secret_random


def stored_files(sv: Stackvault) -> list[Path]:
    return [p for p in sorted(sv.repo.rglob("*")) if p.is_file()]


def chunk_names(sv: Stackvault) -> set[str]:
    return {p.name for p in (sv.repo / "chunks").rglob("*") if p.is_file()}


def sha_digests(sv: Stackvault) -> list[bytes]:
    """The digest of every block in the working state's `.sha` (SVFIDX02: a 144-byte header, then a
    zstd frame of the runs of data blocks and their digests), 32 zero bytes for a block without one."""
    (sha,) = list(sv.workdir.rglob("*.sha"))
    data = sha.read_bytes()
    blocks, runs = struct.unpack_from("<Q", data, 24)[0], struct.unpack_from("<Q", data, 80)[0]
    body = zstandard.ZstdDecompressor().decompress(data[144:])
    digests, at = [bytes(32)] * blocks, 16 * runs
    for r in range(runs):
        start, count = struct.unpack_from("<QQ", body, 16 * r)
        for i in range(start, start + count):
            digests[i], at = body[at : at + 32], at + 32
    return digests


def test_full_incremental_restore_round_trip(esv: EncryptedSv, rng: random.Random, tmp_path: Path) -> None:
    img, _ = image_with_known_blocks(tmp_path / "disk.img", rng)
    full = esv.backup(img, level="full")
    first = sha256_file(img)
    changed = change_blocks(img, [3, 17, 40], rng)
    inc = esv.backup(img, level="incremental")
    assert inc["level"] == "incremental" and inc["blocks_changed"] == len(changed), inc
    assert inc["disks"][0]["blocks_new_chunks"] == len(changed), "an Incremental stores only the changed blocks"
    assert sha256_file(esv.restore(full["backup_id"], tmp_path / "full.raw")) == first
    assert sha256_file(esv.restore(inc["backup_id"], tmp_path / "inc.raw")) == sha256_file(img)
    assert esv.run("verify", "--deep").data["ok"] is True


def test_store_sees_no_plaintext_and_no_fingerprint(esv: EncryptedSv, rng: random.Random, tmp_path: Path) -> None:
    img, secret_random = image_with_known_blocks(tmp_path / "disk.img", rng)
    esv.backup(img, level="full")
    esv.run("state", "backup")
    plain = Stackvault(tmp_path / "plain")
    plain.init("64KiB")
    plain.backup(img, level="full")

    probes = [KNOWN_TEXT[:64], KNOWN_TEXT[1000:1064], secret_random[:32], secret_random[-32:],
              blake3.blake3(KNOWN_TEXT).digest(), blake3.blake3(KNOWN_TEXT).hexdigest().encode(), b"disk.img"]
    assert any(probes[0] in p.read_bytes() or probes[4].hex() in p.name for p in stored_files(plain)), \
        "the unencrypted repository should show the known block (or its id): the probe is wrong"
    for path in stored_files(esv):
        data = path.read_bytes()
        for probe in probes:
            assert probe not in data, f"{path.relative_to(esv.repo)} holds plaintext or a content id"
    assert chunk_names(esv).isdisjoint(chunk_names(plain)), "chunk ids must be keyed, not BLAKE3 of the data"
    assert blake3.blake3(KNOWN_TEXT).hexdigest() not in chunk_names(esv)

    enc_ids, plain_ids = sha_digests(esv), sha_digests(plain)
    assert plain_ids[5] == blake3.blake3(KNOWN_TEXT).digest()
    assert enc_ids[5] != plain_ids[5] and enc_ids[5].hex() in chunk_names(esv), \
        "the working state keeps the keyed ids the repository uses"
    assert enc_ids[12] == bytes(32) == plain_ids[12], "a zero block has no digest of its own"


def test_wrong_or_missing_passphrase_writes_nothing(esv: EncryptedSv, rng: random.Random, tmp_path: Path) -> None:
    img = make_random_image(tmp_path / "disk.img", 1 * MIB, rng)
    esv.backup(img)
    before = tree_listing(esv.repo)
    work_before = tree_listing(esv.workdir)
    change_blocks(img, [1], rng)

    esv.passphrase = "not the passphrase"
    for args in (["backup", "--source", f"file:{img}"], ["list"], ["verify"], ["state", "backup"], ["key", "list"]):
        one_error(esv.run(*args, expect=None), "wrong passphrase", str(esv.repo))
    esv.passphrase = None
    line = one_error(esv.run("backup", "--source", f"file:{img}", expect=None), "encrypted")
    for way in ("STACKVAULT_PASSPHRASE", "--passphrase-file", "terminal"):
        assert way in line, f"the error must name {way}: {line}"
    assert tree_listing(esv.repo) == before, "a refused command wrote to the repository"
    assert tree_listing(esv.workdir) == work_before, "a refused command changed the working state"

    pfile = tmp_path / "passphrase"
    pfile.write_text(PASSPHRASE + "\n")
    pfile.chmod(0o600)
    assert esv.run("backup", "--source", f"file:{img}", globals_=["--passphrase-file", str(pfile)]).data["level"] \
        == "incremental"


def test_key_slots_add_open_remove(esv: EncryptedSv, tmp_path: Path) -> None:
    (first,) = [k["id"] for k in esv.run("key", "list").data["keys"]]
    newfile = tmp_path / "new"
    newfile.write_text("second passphrase\n")
    newfile.chmod(0o600)
    second = esv.run("key", "add", "--new-passphrase-file", str(newfile)).data["added"]
    esv.new_passphrase = "third passphrase"
    third = esv.run("key", "add").data["added"]
    listed = esv.run("key", "list").data["keys"]
    assert {k["id"] for k in listed} == {first, second, third}
    assert all(k["kdf"]["name"] == "scrypt" and k["kdf"]["n"] >= 1 << 14 for k in listed), listed

    esv.passphrase = "second passphrase"
    assert [k["id"] for k in esv.run("key", "list").data["keys"] if k["current"]] == [second]
    one_error(esv.run("key", "remove", second, expect=2), second, "another passphrase")
    esv.run("key", "remove", first)
    esv.run("key", "remove", third)
    one_error(esv.run("key", "remove", second, expect=2), "last key slot")
    esv.passphrase = PASSPHRASE
    one_error(esv.run("list", expect=None), "wrong passphrase")
    esv.passphrase = "third passphrase"
    one_error(esv.run("list", expect=None), "wrong passphrase")
    esv.passphrase = "second passphrase"
    esv.run("list")


def test_plain_repository_has_no_keys(repo: Stackvault) -> None:
    one_error(repo.run("key", "list", expect=2), "not encrypted", "init --encrypt")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _only(sv: Stackvault, folder: str) -> Path:
    files = sorted((sv.repo / folder).rglob("*.*"))
    assert files, f"no object under {folder}/"
    return files[0]


@pytest.mark.parametrize("kind", ["chunk", "index", "record", "key slot", "config", "proxy state"])
def test_an_altered_object_is_named(esv: EncryptedSv, rng: random.Random, tmp_path: Path, kind: str) -> None:
    img = make_random_image(tmp_path / "disk.img", 1 * MIB, rng)
    backup_id = esv.backup(img)["backup_id"]
    esv.run("state", "backup")
    if kind == "chunk":
        victim = sorted(p for p in (esv.repo / "chunks").rglob("*") if p.is_file())[3]
        _flip(victim, 200)
        res = esv.run("verify", "--deep", expect=3)
        assert [c["chunk"] for c in res.data["bad_chunks"]] == [victim.name], res.describe()
        one_error(esv.run("restore", backup_id, "--to", f"file:{tmp_path / 'out.raw'}", expect=None), victim.name)
        assert not (tmp_path / "out.raw").exists()
        return
    if kind == "index":
        victim = _only(esv, "indexes")
        _flip(victim, 300)
        res = esv.run("verify", expect=3)
        assert victim.name in json.dumps(res.data["bad_indexes"]) and "authentication" in json.dumps(res.data)
        one_error(esv.run("restore", backup_id, "--to", f"file:{tmp_path / 'out.raw'}", expect=None),
                  f"indexes/{backup_id}/{victim.name}")
        return
    if kind == "record":
        victim, command, named = _only(esv, "backups"), ["show", backup_id], f"backups/{backup_id}.json"
    elif kind == "key slot":
        victim = _only(esv, "keys")
        command, named = ["list"], f"keys/{victim.name}"
        doc = json.loads(victim.read_text())
        doc["wrapped"] = ("B" if doc["wrapped"][0] != "B" else "C") + doc["wrapped"][1:]
        victim.write_text(json.dumps(doc))
    elif kind == "config":
        victim, command, named = esv.repo / "config", ["list"], "config"
    else:
        victim = _only(esv, "proxy-state")
        command, named = ["state", "restore"], f"proxy-state/{victim.name}"
    if kind != "key slot":
        _flip(victim, len(victim.read_bytes()) // 2)
    line = one_error(esv.run(*command, expect=None), named)
    assert "damaged" in line or "authentication" in line, line


def test_a_reader_of_plain_repositories_only_says_upgrade(esv: EncryptedSv) -> None:
    """What a stackvault from before encryption does: its version check refuses the newer format."""
    code = ("import sys; import stackvault.engine.repository as r; r.FORMAT_VERSION = 1; "
            "from stackvault.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["--repo", str(esv.repo), "--workdir", str(esv.workdir), "--catalog", esv.catalog_url, "list"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=esv.env(),
                          timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "upgrade stackvault" in proc.stderr and "version 3" in proc.stderr, proc.stderr


def test_saved_state_of_an_encrypted_repository_is_sealed(esv: EncryptedSv, rng: random.Random,
                                                         tmp_path: Path) -> None:
    config = tmp_path / "stackvault.toml"
    config.write_text(f'repo = "{esv.repo}"\nworkdir = "{esv.workdir}"\n[retention]\nkeep_last = 3\n')
    esv.backup(make_random_image(tmp_path / "disk.img", 256 * KIB, rng))
    saved = esv.run("state", "backup", globals_=["--config", str(config)]).data
    assert saved["warnings"] == [] and saved["config_saved"], saved
    (obj,) = (esv.repo / "proxy-state").iterdir()
    assert b"keep_last" not in obj.read_bytes() and obj.read_bytes()[:4] == b"SVE1"
    out = tmp_path / "recovered.toml"
    esv.run("state", "restore", "--config-out", str(out))
    assert out.read_text() == config.read_text()


def run_on_terminal(sv: Stackvault, args: list[str], answers: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run a command on a pseudo-terminal, typing each answer once its prompt has appeared.

    An answer typed early would be lost: getpass flushes pending input when it turns echo off.
    """
    argv = sv.argv(args, json_out=False)
    env = sv.env()
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes the command
        os.execve(argv[0], argv, env)
    out = b""
    deadline = time.monotonic() + timeout

    def read() -> bool:
        nonlocal out
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return False
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closes when the command exits
            return False
        out += chunk
        return bool(chunk)

    for i, answer in enumerate(answers):
        while out.count(b"passphrase for") + out.count(b"repeat it") <= i and read():
            pass
        os.write(fd, answer.encode() + b"\n")
    while read():
        pass
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


@pytest.mark.skipif(not stackvault_command()[0].startswith("/"), reason="needs the stackvault script")
def test_passphrase_asked_on_a_terminal(tmp_path: Path) -> None:
    sv = EncryptedSv(tmp_path / "sv", passphrase=None)
    rc, out = run_on_terminal(sv, ["init", "--encrypt", "--block-size", "64KiB"], ["typed one", "typed one"])
    assert rc == 0 and "encrypted" in out, out
    rc, out = run_on_terminal(sv, ["list"], ["typed one"])
    assert rc == 0 and "passphrase for" in out and "typed one" not in out, out  # asked, not echoed
    rc, out = run_on_terminal(sv, ["list"], ["typed two"])
    assert rc == 2 and "wrong passphrase" in out, out
