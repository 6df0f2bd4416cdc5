"""Repository format 4 (pack files) as a user meets it: what it stores, what survives a kill -9, what
`verify` names when a pack or an index is damaged, what `gc` frees and rebuilds.

Everything goes through the `stackvault` command and the files of a local repository.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import BLOCK, MIB, Stackvault, change_blocks, kill_group, make_random_image, sha256_file

SIZE = 8 * MIB
PASSPHRASE = "correct horse battery staple"


def _init(sv: Stackvault, fmt: int, encrypted: bool = False, pack_size: str = "1MiB") -> Stackvault:
    args = ["init", "--block-size", "64KiB", "--format", str(fmt)]
    if fmt == 4:
        args += ["--pack-size", pack_size]
    if encrypted:
        (sv.root / "pass").write_text(PASSPHRASE)
        (sv.root / "pass").chmod(0o600)
        args += ["--encrypt", "--passphrase-file", sv.root / "pass"]
    sv.run(*args)
    return sv


def _objects(sv: Stackvault, folder: str) -> list[Path]:
    return sorted(p for p in (sv.repo / folder).rglob("*") if p.is_file()) if (sv.repo / folder).exists() else []


class EncryptedStackvault(Stackvault):
    """The same user setup, every command given the repository's passphrase file."""

    def argv(self, args, json_out=True, globals_=(), catalog=None):  # type: ignore[no-untyped-def]  # as the base
        return super().argv(args, json_out, [*globals_, "--passphrase-file", str(self.root / "pass")], catalog)


@pytest.fixture(params=[(3, False), (4, False), (4, True)], ids=["format3", "format4", "format4-encrypted"])
def any_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Stackvault:
    fmt, encrypted = request.param
    sv = (EncryptedStackvault if encrypted else Stackvault)(tmp_path / "sv")
    return _init(sv, fmt, encrypted)


def _affected(verify: dict) -> set[str]:
    return {b for bad in verify["bad_chunks"] for b in bad["backups"]}


def test_every_level_restores_the_same_bytes_on_both_formats(any_repo: Stackvault, rng: random.Random,
                                                             tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    with open(src, "r+b") as f:  # a hole and a run of repeated blocks: zeros and dedup inside one run
        f.seek(2 * MIB)
        f.write(bytes(2 * MIB))
        f.seek(6 * MIB)
        f.write(b"\x5a" * BLOCK * 8)
    taken = []
    for level in ("full", "incremental", "differential", "incremental"):
        if taken:
            change_blocks(src, rng.sample(range(SIZE // BLOCK), 20), rng)
        taken.append((any_repo.backup(src, level=level)["backup_id"], sha256_file(src)))
    for backup_id, digest in taken:
        out = tmp_path / f"{backup_id}.img"
        assert sha256_file(any_repo.restore(backup_id, out)) == digest, f"restore of {backup_id} differs"
    verify = any_repo.run("verify", "--deep").data
    assert verify["ok"] and verify["chunks_checked"] > 0
    packs, chunks = _objects(any_repo, "packs"), _objects(any_repo, "chunks")
    if json.loads((any_repo.repo / "config").read_text())["version"] == 3:
        assert packs == [] and chunks
    else:
        assert chunks == [], "a packed repository stores no chunk objects"
        # 8 MiB of mostly random data in 1 MiB packs: a few dozen objects instead of hundreds.
        assert 5 <= len(packs) <= 20, len(packs)
        assert len(_objects(any_repo, "index")) == 4, "one chunk index file per backup"


def test_encrypted_packs_show_the_store_no_chunk_sizes(sv: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """A pack's chunks are padded as a whole to 64 KiB, its header to 4 KiB before sealing: every pack's
    size is 64 KiB x n + 4 KiB x m + 40 (seal overhead 32, trailer 8), whatever its chunks' sizes."""
    _init(sv, 4, encrypted=True)
    src = make_random_image(tmp_path / "disk.img", SIZE, rng)
    with open(src, "r+b") as f:  # compressible blocks of many sizes
        for i in range(0, SIZE // BLOCK, 3):
            f.seek(i * BLOCK)
            f.write(bytes(rng.randrange(1, BLOCK)))
    sv.run("backup", "--source", f"file:{src}", "--passphrase-file", sv.root / "pass")
    sizes = [p.stat().st_size for p in _objects(sv, "packs")]
    assert sizes and all(size % 4096 == 40 for size in sizes), sizes


def _packs_and_indexes(sv: Stackvault) -> tuple[set[str], set[str]]:
    return {p.name for p in _objects(sv, "packs")}, {p.name for p in _objects(sv, "index")}


def test_a_backup_killed_after_storing_packs_leaves_a_repository_that_verifies_and_gc_cleans(
        sv: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    _init(sv, 4)
    src = make_random_image(tmp_path / "disk.img", 8 * MIB, rng)
    first = sv.backup(src, level="full")["backup_id"]
    packs_before, indexes_before = _packs_and_indexes(sv)
    big = make_random_image(tmp_path / "big.img", 256 * MIB, rng)
    proc = sv.popen("backup", "--source", f"file:{big}", "--level", "full")
    deadline = time.monotonic() + 120
    while len(_packs_and_indexes(sv)[0] - packs_before) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the backup finished before it could be killed: make the source larger"
    kill_group(proc)
    packs_after, indexes_after = _packs_and_indexes(sv)
    assert packs_after - packs_before, "the killed backup had stored packs"
    assert indexes_after == indexes_before, "no chunk index may name packs before the backup commits"
    assert sv.repository_ids() == [first]
    verify = sv.run("verify", "--deep").data
    assert verify["ok"], verify

    gc = sv.run("gc").data
    assert gc["packs_deleted"] >= len(packs_after - packs_before) - 1, gc
    assert _packs_and_indexes(sv)[0] == packs_before, "gc removes every pack of the killed backup"
    assert sv.run("verify", "--deep").data["ok"]
    out = sv.restore(first, tmp_path / "out.img")
    assert sha256_file(out) == sha256_file(src)
    again = sv.backup(big, level="full")  # the next run stores what the killed one lost
    out = sv.restore(again["backup_id"], tmp_path / "big.out")
    assert sha256_file(out) == sha256_file(big)


def _two_backups(sv: Stackvault, rng: random.Random, tmp_path: Path) -> tuple[Path, Path, str, str]:
    a = make_random_image(tmp_path / "a.img", 4 * MIB, rng)
    b = make_random_image(tmp_path / "b.img", 4 * MIB, rng)
    return a, b, sv.backup(a, level="full")["backup_id"], sv.backup(b, level="full")["backup_id"]


def _damage_header(pack: Path) -> None:
    data = bytearray(pack.read_bytes())
    data[-20] ^= 0xFF  # inside the header's entries (the last 8 bytes are the trailer)
    pack.write_bytes(bytes(data))


def _packs_of(sv: Stackvault, before: set[str]) -> list[Path]:
    return [p for p in _objects(sv, "packs") if p.name not in before]


def _two_disks_backed_up(sv: Stackvault, rng: random.Random, tmp_path: Path) -> tuple:
    """A format 4 repository with a Full of each of two unrelated disks: (disk a, its backup, the packs
    that backup wrote, disk b, its backup)."""
    _init(sv, 4)
    a = make_random_image(tmp_path / "a.img", 4 * MIB, rng)
    first = sv.backup(a, level="full")["backup_id"]
    first_packs = {p.name for p in _objects(sv, "packs")}
    b = make_random_image(tmp_path / "b.img", 4 * MIB, rng)
    second = sv.backup(b, level="full")["backup_id"]
    return a, first, first_packs, b, second


@pytest.mark.parametrize("damage", ["header", "missing"])
def test_verify_deep_names_the_backup_whose_pack_is_damaged_or_missing(sv: Stackvault, rng: random.Random,
                                                                      tmp_path: Path, damage: str) -> None:
    a, first, first_packs, _b, second = _two_disks_backed_up(sv, rng, tmp_path)
    victim = _packs_of(sv, first_packs)[0]
    if damage == "header":
        _damage_header(victim)
    else:
        victim.unlink()
    res = sv.run("verify", "--deep", expect=3)
    assert res.data["ok"] is False
    assert _affected(res.data) == {second}, res.describe()
    assert all(victim.name in bad["problem"] for bad in res.data["bad_chunks"]), res.data["bad_chunks"]
    assert res.data["set_aside"] == [], "a pack is never rewritten in place"
    if damage == "missing":  # a plain verify sees a missing pack too
        plain = sv.run("verify", expect=3).data
        assert _affected(plain) == {second}
    out = sv.restore(first, tmp_path / "a.out")
    assert sha256_file(out) == sha256_file(a), "a backup whose packs are intact still restores"


def test_gc_rebuilds_a_lost_chunk_index_from_the_packs(sv: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    _init(sv, 4)
    a, b, first, second = _two_backups(sv, rng, tmp_path)
    indexes = _objects(sv, "index")
    indexes[0].write_bytes(indexes[0].read_bytes()[:-1] + b"\0")  # damaged
    indexes[1].unlink()  # lost
    res = sv.run("verify", expect=3)
    assert _affected(res.data) == {first, second}
    assert any("chunk index" in w and "damaged" in w for w in res.data["warnings"]), res.data["warnings"]

    gc = sv.run("gc").data
    assert gc["packs_deleted"] == 0, "a pack whose index was lost still holds live chunks"
    assert len(_objects(sv, "index")) == 1, "gc writes one index of every pack and removes the others"
    assert sv.run("verify", "--deep").data["ok"]
    for backup_id, src in ((first, a), (second, b)):
        assert sha256_file(sv.restore(backup_id, tmp_path / f"{backup_id}.out")) == sha256_file(src)


def test_gc_deletes_the_packs_of_a_forgotten_backup_and_keeps_the_rest(sv: Stackvault, rng: random.Random,
                                                                       tmp_path: Path) -> None:
    _a, first, first_packs, b, second = _two_disks_backed_up(sv, rng, tmp_path)
    sv.run("forget", first)
    dry = sv.run("gc", "--dry-run").data
    assert dry["packs_deleted"] == len(first_packs) and {p.name for p in _objects(sv, "packs")} >= first_packs
    gc = sv.run("gc").data
    assert gc["packs_deleted"] == len(first_packs) and gc["chunks_deleted"] == 4 * MIB // BLOCK, gc
    assert not first_packs & {p.name for p in _objects(sv, "packs")}
    assert sha256_file(sv.restore(second, tmp_path / "b.out")) == sha256_file(b)
    assert sv.run("verify", "--deep").data["ok"]


def test_init_refuses_a_pack_size_without_format_4(sv: Stackvault) -> None:
    res = sv.run("init", "--pack-size", "8MiB", expect=2)
    assert res.error_lines() == ["stackvault: error: --pack-size needs --format 4 (add --format 4, or leave "
                                 "--pack-size out)"]
    res = sv.run("init", "--format", "4", "--pack-size", "4GiB", expect=2)
    assert len(res.error_lines()) == 1 and "pack size" in res.error_lines()[0]
    assert not (sv.repo / "config").exists()


def test_config_of_format_4_names_its_pack_size(sv: Stackvault) -> None:
    _init(sv, 4, pack_size="8MiB")
    doc = json.loads((sv.repo / "config").read_text())
    assert doc["version"] == 4 and doc["pack_size"] == 8 * MIB


def test_gc_rewrites_packs_whose_live_share_fell_low(sv: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """After the Full that shares 10% of its blocks with the next one is forgotten, its packs hold
    about 10% live chunks: gc copies those into new packs and deletes the old ones (restic's prune).
    Which chunk lands in which pack follows the upload workers' order: with 10% live overall, no pack
    comes near the 80% above which it would be kept as it is."""
    _init(sv, 4)
    blocks = 4 * MIB // BLOCK
    src = make_random_image(tmp_path / "disk.img", 4 * MIB, rng)
    first = sv.backup(src, level="full")["backup_id"]
    first_packs = {p.name for p in _objects(sv, "packs")}
    change_blocks(src, rng.sample(range(blocks), blocks * 9 // 10), rng)
    second = sv.backup(src, level="full")["backup_id"]
    sv.run("forget", first)
    gc = sv.run("gc").data
    # Every pack of the first Full goes: those with no live chunk at once, the others rewritten.
    assert gc["packs_deleted"] == len(first_packs) and gc["packs_repacked"] >= 1, gc
    assert gc["bytes_repacked"] > 0, gc
    assert gc["chunks_deleted"] == blocks * 9 // 10, gc
    assert not first_packs & {p.name for p in _objects(sv, "packs")}, "every rewritten pack is deleted"
    stored = sum(p.stat().st_size for p in _objects(sv, "packs"))
    assert stored <= blocks * BLOCK * 1.02, f"{stored} bytes of packs for {blocks} live chunks of {BLOCK}"
    assert sha256_file(sv.restore(second, tmp_path / "out.img")) == sha256_file(src)
    assert sv.run("verify", "--deep").data["ok"]
    again = sv.run("gc").data
    assert again["packs_deleted"] == 0 and again["packs_repacked"] == 0, "a second gc finds nothing to do"


def test_a_reader_of_format_3_says_upgrade_on_a_format_4_repository(sv: Stackvault, tmp_path: Path) -> None:
    """What a stackvault from before pack files does with a packed repository: one line, no guessing."""
    _init(sv, 4)
    code = ("import sys; import stackvault.engine.repository as r; r.FORMAT_VERSION = 3; "
            "from stackvault.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["--repo", str(sv.repo), "--workdir", str(sv.workdir), "--catalog", sv.catalog_url, "list"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=sv.env(),
                          timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("stackvault: error:")]
    assert len(lines) == 1 and "version 4" in lines[0] and "upgrade stackvault" in lines[0], proc.stderr
