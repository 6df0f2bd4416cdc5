"""Store-facing fixes, as a user meets them: proxies with separate catalogs after a prune, a record
of the new format without its checksum, a Differential whose Full record is damaged, objects far
larger than stackvault writes (refused without being read into memory).

Every test uses the real CLI; the repository's files are changed only as a store (or bit rot) would.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, change_blocks, make_random_image, measured, one_error, sha256_file

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow

PASSPHRASE = "correct horse battery staple"


@dataclass
class EncryptedSv(Stackvault):
    def env(self) -> dict[str, str]:
        return {**super().env(), "STACKVAULT_PASSPHRASE": PASSPHRASE}


def _other_proxy(a: Stackvault, root: Path) -> Stackvault:
    """Another proxy on A's repository: its own working directory and its own catalog."""
    p = Stackvault(root)
    p.repo = a.repo
    return p


def _backups(sv: Stackvault, tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    """A Full then Incrementals of one 1 MiB disk, a few blocks changed between them."""
    rng = random.Random(7)
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    ids = [sv.backup(src, level="full")["backup_id"]]
    for n in range(count - 1):
        change_blocks(src, [n + 1], rng)
        ids.append(sv.backup(src)["backup_id"])
    return src, ids


def test_prune_and_forget_by_another_proxy_leave_no_missing_backups(tmp_path: Path) -> None:
    """Proxy P (its own catalog) forgets and prunes; proxy A's catalog still lists those backups.
    A's `list` drops them (tombstones say they were removed on purpose) and A's `verify` passes;
    a record deleted without a command stays reported."""
    a = Stackvault(tmp_path / "a")
    a.init()
    src, ids = _backups(a, tmp_path, 4)
    assert a.list_ids() == ids
    p = _other_proxy(a, tmp_path / "p")
    p.run("forget", ids[0])
    pruned = p.run("prune", "--keep-last", "1").data
    assert pruned["removed"] == ids[1:3]

    listed = a.run("list")
    assert [b["backup_id"] for b in listed.data["backups"]] == ids[3:], listed.describe()
    assert "missing" not in listed.data and "missing" not in listed.stderr, listed.describe()
    verified = a.run("verify")
    assert verified.data["ok"] and verified.data["missing_backups"] == [], verified.describe()
    for backup_id, job in zip(ids[:3], ["forget", "prune", "prune"], strict=True):
        tomb = json.loads((a.repo / "forgotten" / backup_id).read_text())
        assert tomb["backup_id"] == backup_id and tomb["job"] == job and tomb["host"], tomb

    # A deletion nobody asked for: the store drops a record, no tombstone.
    change_blocks(src, [9], random.Random(8))
    lost = a.backup(src)["backup_id"]
    a.backup(src)
    (a.repo / "backups" / f"{lost}.json").unlink()
    listed = a.run("list")
    assert listed.data["missing"] == [lost], listed.describe()
    verified = a.run("verify", expect=3)
    assert verified.data["missing_backups"] == [lost], verified.describe()


def test_the_newest_backup_forgotten_by_another_proxy_is_no_rollback(tmp_path: Path) -> None:
    a = Stackvault(tmp_path / "a")
    a.init()
    _, ids = _backups(a, tmp_path, 2)
    assert a.list_ids() == ids  # A saw ids[1] as the newest
    _other_proxy(a, tmp_path / "p").run("forget", ids[1])
    listed = a.run("list")
    assert [b["backup_id"] for b in listed.data["backups"]] == ids[:1], listed.describe()
    assert "rollback" not in listed.data and "older state" not in listed.stderr, listed.describe()


def test_a_planted_tombstone_hides_no_deletion_in_an_encrypted_repository(tmp_path: Path) -> None:
    """The store deletes a record and plants a tombstone for it: it cannot seal one, so the
    backup stays reported as missing."""
    a = EncryptedSv(tmp_path / "a")
    a.run("init", "--encrypt", "--block-size", "64KiB")
    _, ids = _backups(a, tmp_path, 2)
    assert a.list_ids() == ids
    (a.repo / "backups" / f"{ids[0]}.json").unlink()
    (a.repo / "forgotten").mkdir()
    (a.repo / "forgotten" / ids[0]).write_text(json.dumps(
        {"format": "stackvault-forgotten", "backup_id": ids[0], "forgotten": "2026-12-01T00:00:00+00:00",
         "host": "store", "job": "prune"}))
    assert a.run("list").data["missing"] == [ids[0]]
    verified = a.run("verify", expect=3)
    assert verified.data["missing_backups"] == [ids[0]], verified.describe()


def test_a_new_format_record_without_its_checksum_is_damaged(tmp_path: Path) -> None:
    sv = Stackvault(tmp_path / "sv")
    sv.init()
    _, ids = _backups(sv, tmp_path, 2)
    path = sv.repo / "backups" / f"{ids[0]}.json"
    doc = json.loads(path.read_bytes())
    assert doc["version"] == 2  # what a proxy reading only version 1 refuses: "upgrade stackvault"
    del doc["checksum"]
    path.chmod(0o644)
    path.write_text(json.dumps(doc))
    res = sv.run("verify", expect=3)
    assert "Traceback" not in res.stderr, res.describe()
    assert res.data["bad_records"] == [{"backup": ids[0], "problem": "field 'checksum' is missing"}], res.describe()


def test_a_differential_over_a_damaged_full_record_stores_every_block(tmp_path: Path) -> None:
    """The change bitmap is rebuilt while the Full's record is damaged: the Differential counts
    every block as changed (as for a pruned Full), says why, and restores byte for byte."""
    sv = Stackvault(tmp_path / "sv")
    sv.init()
    src, ids = _backups(sv, tmp_path, 2)
    full = sv.repo / "backups" / f"{ids[0]}.json"
    full.chmod(0o644)
    full.write_bytes(full.read_bytes()[:100])
    for bmp in sv.workdir.rglob("*.bmp"):
        bmp.unlink()
    change_blocks(src, [5], random.Random(9))
    report = sv.backup(src, level="differential")
    assert report["level"] == "differential", report
    assert report["blocks_changed"] == report["blocks_total"], report
    assert any("damaged" in w and "every block counts as changed" in w for w in report["warnings"]), report
    restored = sv.restore(report["backup_id"], tmp_path / "restored.img")
    assert sha256_file(restored) == sha256_file(src)


#: What a command may hold in memory at its peak here (the interpreter and its libraries included):
#: far below the objects planted, which are never read whole.
RSS_BOUND = 400 * MIB


def test_a_huge_record_is_damaged_and_never_read_into_memory(tmp_path: Path) -> None:
    sv = Stackvault(tmp_path / "sv")
    sv.init()
    _, ids = _backups(sv, tmp_path, 2)
    with open(sv.repo / "backups" / f"{ids[0]}.json", "r+b") as f:
        f.truncate(1 << 30)  # sparse: costs no disk
    res, rss = measured(sv, "verify")
    assert res.rc == 3, res.describe()
    assert res.data["bad_records"] == [{"backup": ids[0], "problem": f"larger than {64 << 20} bytes"}], res.describe()
    assert rss < RSS_BOUND, f"verify held {rss >> 20} MiB"


def test_a_huge_saved_proxy_state_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Larger than anything `state backup` writes (all of it read back on restore): refused at once."""
    sv = Stackvault(tmp_path / "sv")
    sv.init()
    sv.run("state", "backup")
    path = next((sv.repo / "proxy-state").iterdir())
    with open(path, "r+b") as f:
        f.truncate(66 << 30)  # sparse
    res, rss = measured(sv, "state", "restore")
    one_error(res, "saved proxy state", "damaged", "larger than", rc=1)
    assert rss < RSS_BOUND, f"state restore held {rss >> 20} MiB"
