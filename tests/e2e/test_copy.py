"""`stackvault copy`: a second repository filled incrementally from the first, standing on its own.

What a user checks: the second repository restores the same bytes after the first one is deleted,
`verify --deep` passes on it, a repeated copy sends nothing, a later backup's copy sends only its new
chunks, a copy killed with SIGKILL finishes when run again, and a second repository that cannot take
the copy (other block size, wrong passphrase) is refused in one line with nothing written to it.
Everything goes through the `stackvault` command and local directories.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import (
    BLOCK,
    MIB,
    Stackvault,
    change_blocks,
    kill_group,
    make_random_image,
    one_error,
    sha256_file,
    tree_listing,
)
from .test_older_repository_formats import as_format_1

SIZE = 4 * MIB


@dataclass
class Site(Stackvault):
    """One repository of a proxy (its working directory and catalog are shared by every site made
    under the same root), at `<root>/<name>`, encrypted under `passphrase` when one is given."""

    name: str = "repo"
    passphrase: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.repo = self.root / self.name
        if self.passphrase is not None:
            self.pass_file.write_text(self.passphrase)
            self.pass_file.chmod(0o600)

    @property
    def pass_file(self) -> Path:
        return self.root / f"{self.name}.pass"

    def argv(self, args: Sequence[str], json_out: bool = True, globals_: Sequence[str] = (),
             catalog: str | None = None) -> list[str]:
        given = ["--passphrase-file", str(self.pass_file)] if self.passphrase is not None else []
        return super().argv(args, json_out, [*globals_, *given], catalog)

    def make(self, fmt: int = 3, block_size: str = "64KiB") -> Site:
        args = ["init", "--block-size", block_size, "--format", str(fmt)]
        if fmt == 4:
            args += ["--pack-size", "1MiB"]
        if self.passphrase is not None:
            args.append("--encrypt")
        self.run(*args)
        return self

    def copy_to(self, other: Site, *args: str, expect: int | None = 0, json_out: bool = True):  # -> Result
        given = ["--to-passphrase-file", str(other.pass_file)] if other.passphrase is not None else []
        return self.run("copy", "--to", other.repo, *given, *args, expect=expect, json_out=json_out)


def _new_chunks(report: dict) -> int:
    return sum(d["blocks_new_chunks"] for d in report["disks"])


def _restores(site: Site, taken: dict[str, str], tmp_path: Path) -> None:
    for backup_id, digest in taken.items():
        out = site.restore(backup_id, tmp_path / f"{site.name}-{backup_id}.img")
        assert sha256_file(out) == digest, f"backup {backup_id} restored from {site.repo} differs"
        out.unlink()


def test_second_site_is_filled_incrementally_and_restores_alone(tmp_path: Path, rng: random.Random) -> None:
    first = Site(tmp_path / "proxy", "site1", "first passphrase").make()
    second = Site(tmp_path / "proxy", "site2", "another passphrase at the second site").make()
    disk = make_random_image(tmp_path / "disk.img", SIZE, rng)
    taken: dict[str, str] = {}
    reports = []
    for level in ("full", "incremental"):
        if reports:
            change_blocks(disk, rng.sample(range(SIZE // BLOCK), 12), rng)
        reports.append(first.backup(disk, level=level))
        taken[reports[-1]["backup_id"]] = sha256_file(disk)

    copied = first.copy_to(second).data
    assert copied["backups_copied"] == 2 and copied["backups_skipped"] == 0, copied
    assert copied["reencrypted"], "two repositories with their own keys: chunks are rehashed and resealed"
    assert copied["chunks_sent"] == sum(map(_new_chunks, reports)), copied
    assert copied["bytes_sent"] > 0 and copied["status"] == "success"
    assert [b["backup_id"] for b in copied["backups"]] == list(taken)

    again = first.copy_to(second, json_out=False)
    assert "nothing to send" in again.stdout, again.describe()
    again_doc = first.copy_to(second).data
    assert (again_doc["backups_copied"], again_doc["backups_skipped"], again_doc["chunks_sent"],
            again_doc["chunks_read"]) == (0, 2, 0, 0), again_doc

    change_blocks(disk, rng.sample(range(SIZE // BLOCK), 7), rng)
    third = first.backup(disk, level="incremental")
    taken[third["backup_id"]] = sha256_file(disk)
    later = first.copy_to(second).data
    assert later["backups_copied"] == 1 and later["backups_skipped"] == 2, later
    assert later["chunks_sent"] == _new_chunks(third) > 0, later
    # The chunks it shares with the copy of its base are known by their new ids without being read.
    assert later["chunks_read"] == later["chunks_sent"], later

    shown = {b: first.run("show", b).data for b in taken}
    shutil.rmtree(first.repo)
    for backup_id, record in shown.items():
        there = second.run("show", backup_id).data
        for field in ("backup_id", "created", "finished", "level", "requested_level", "consistency", "source",
                      "host", "status"):
            assert there[field] == record[field], (field, there, record)
    _restores(second, taken, tmp_path)
    verify = second.run("verify", "--deep").data
    assert verify["ok"] and verify["backups_checked"] == 3, verify


def test_a_backup_copied_without_its_full_restores(tmp_path: Path, rng: random.Random) -> None:
    first = Site(tmp_path / "proxy", "site1").make()
    second = Site(tmp_path / "proxy", "site2").make()
    disk = make_random_image(tmp_path / "disk.img", SIZE, rng)
    other = make_random_image(tmp_path / "other.img", SIZE // 2, rng)
    first.backup(disk, level="full")
    first.backup(other, level="full")
    change_blocks(disk, [1, 5, 9], rng)
    incremental = first.backup(disk, level="incremental")["backup_id"]

    copied = first.copy_to(second, incremental[:-2]).data  # a unique prefix, as `restore` takes
    assert [b["backup_id"] for b in copied["backups"]] == [incremental], copied
    assert not copied["reencrypted"], "two plain repositories name chunks alike"
    assert sha256_file(second.restore(incremental, tmp_path / "out.img")) == sha256_file(disk)

    only_other = first.copy_to(second, "--source", f"file:{other}").data
    assert only_other["backups_copied"] == 1 and len(only_other["backups"]) == 1, only_other
    assert second.run("verify", "--deep").data["ok"]


def test_what_the_second_repository_forgot_stays_forgotten_unless_named(tmp_path: Path, rng: random.Random) -> None:
    first = Site(tmp_path / "proxy", "site1").make()
    second = Site(tmp_path / "proxy", "site2").make()
    disk = make_random_image(tmp_path / "disk.img", SIZE, rng)
    old = first.backup(disk, level="full")["backup_id"]
    change_blocks(disk, [2, 6], rng)
    new = first.backup(disk, level="incremental")["backup_id"]
    first.copy_to(second)
    second.run("forget", old)  # the second site keeps less than the first

    again = first.copy_to(second).data
    assert {b["backup_id"]: b["result"] for b in again["backups"]} == {old: "forgotten", new: "skipped"}, again
    assert again["chunks_sent"] == 0 and old not in second.run("list").stdout
    named = first.copy_to(second, old).data
    assert named["backups_copied"] == 1 and old in second.run("list").stdout, named
    assert second.run("verify", "--deep").data["ok"]


@pytest.mark.parametrize(("source", "target"), [
    ((3, None), (4, "packs at the second site")),
    ((4, "packs at the first site"), (3, None)),
    ((3, None), (4, None)),
], ids=["objects-to-encrypted-packs", "encrypted-packs-to-objects", "plain-objects-to-plain-packs"])
def test_copy_between_formats(source: tuple[int, str | None], target: tuple[int, str | None], tmp_path: Path,
                              rng: random.Random) -> None:
    first = Site(tmp_path / "proxy", "site1", source[1]).make(source[0])
    second = Site(tmp_path / "proxy", "site2", target[1]).make(target[0])
    disk = make_random_image(tmp_path / "disk.img", SIZE, rng)
    taken = {}
    for level in ("full", "incremental"):
        change_blocks(disk, rng.sample(range(SIZE // BLOCK), 10), rng)
        taken[first.backup(disk, level=level)["backup_id"]] = sha256_file(disk)
    copied = first.copy_to(second).data
    assert copied["backups_copied"] == 2 and copied["chunks_sent"] > 0, copied
    decrypted = source[1] is not None and target[1] is None
    assert (copied["status"] == "warning") == decrypted, copied
    assert any("stored there unencrypted" in w for w in copied["warnings"]) == decrypted, copied
    assert first.copy_to(second).data["chunks_sent"] == 0
    shutil.rmtree(first.repo)
    _restores(second, taken, tmp_path)
    assert second.run("verify", "--deep").data["ok"]
    stored = {p.parts[len(second.repo.parts)] for p in second.repo.rglob("*") if p.is_file()}
    assert ("packs" in stored) == (target[0] == 4) and ("chunks" in stored) == (target[0] == 3), stored


@pytest.mark.slow  # two kills and reruns with gc and deep verifies: ~15 s
@pytest.mark.parametrize("fmt", [3, 4], ids=["format3", "format4"])
def test_a_copy_killed_mid_way_finishes_when_run_again(fmt: int, tmp_path: Path, rng: random.Random) -> None:
    first = Site(tmp_path / "proxy", "site1").make()
    second = Site(tmp_path / "proxy", "site2", "second site").make(fmt)
    disk = make_random_image(tmp_path / "disk.img", 96 * MIB, rng)
    backup_id = first.backup(disk, level="full")["backup_id"]
    stored = second.repo / ("chunks" if fmt == 3 else "packs")

    proc = first.popen("copy", "--to", second.repo, "--to-passphrase-file", second.pass_file)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and \
            sum(1 for p in stored.rglob("*") if p.is_file() and not p.name.startswith(".tmp")) < 3:
        time.sleep(0.01)
    assert proc.poll() is None, "the copy finished before it could be killed: make the disk larger"
    kill_group(proc)
    assert not list((second.repo / "backups").glob("*.json")), "no backup is committed before its chunks"
    assert second.run("verify").data["ok"], "a killed copy leaves the second repository valid"

    resumed = first.copy_to(second).data
    assert resumed["backups_copied"] == 1, resumed
    if fmt == 3:  # chunk objects stored before the kill are found, not sent again
        assert resumed["chunks_held"] > 0, resumed
    else:  # packs of the killed copy that no chunk index names were sent again: gc frees them
        assert second.run("gc").data["packs_deleted"] > 0
    verify = second.run("verify", "--deep").data
    assert verify["ok"] and verify["backups_checked"] == 1, verify
    shutil.rmtree(first.repo)
    _restores(second, {backup_id: sha256_file(disk)}, tmp_path)


def test_a_second_repository_that_cannot_take_the_copy_is_refused(tmp_path: Path, rng: random.Random) -> None:
    first = Site(tmp_path / "proxy", "site1").make()
    first.backup(make_random_image(tmp_path / "disk.img", SIZE // 4, rng), level="full")

    other_blocks = Site(tmp_path / "proxy", "site2").make(block_size="128KiB")
    before = tree_listing(other_blocks.repo)
    line = one_error(first.copy_to(other_blocks, expect=2), "block", "--block-size 64KiB", rc=2)
    assert str(other_blocks.repo) in line
    assert tree_listing(other_blocks.repo) == before, "nothing is written to a repository that is refused"

    encrypted = Site(tmp_path / "proxy", "site3", "the right one").make()
    before = tree_listing(encrypted.repo)
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the right one")
    wrong.chmod(0o600)
    refused = first.run("copy", "--to", encrypted.repo, "--to-passphrase-file", wrong, expect=2)
    one_error(refused, "wrong passphrase", "--to-passphrase-file", rc=2)
    assert tree_listing(encrypted.repo) == before
    assert encrypted.run("list").data["backups"] == []

    nowhere = tmp_path / "no-repository-here"
    one_error(first.run("copy", "--to", nowhere, expect=1), "no stackvault repository", "--to", rc=1)
    assert not nowhere.exists()
    one_error(first.run("copy", "--to", first.repo, expect=2), "the one copied from", rc=2)


@pytest.mark.slow  # an old format, each way: ~7 s
@pytest.mark.parametrize("passphrase", [None, "second site"], ids=["plain", "encrypted"])
def test_a_repository_of_format_1_is_copied(passphrase: str | None, tmp_path: Path, rng: random.Random) -> None:
    """Its dense `SVFIDX01` indexes are written as the second repository's own (sparse) indexes."""
    first = Site(tmp_path / "proxy", "site1").make()
    disk = make_random_image(tmp_path / "disk.img", SIZE, rng)
    backup_id = first.backup(disk, level="full")["backup_id"]
    as_format_1(first, backup_id, SIZE)
    first.run("catalog", "rebuild")
    second = Site(tmp_path / "proxy", "site2", passphrase).make()
    assert first.copy_to(second).data["backups_copied"] == 1
    assert second.run("verify", "--deep").data["ok"]
    _restores(second, {backup_id: sha256_file(disk)}, tmp_path)
