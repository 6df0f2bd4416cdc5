"""Proofs of quiesce planted or damaged by the store are worth no proof, and stop nothing.

A proof only raises a backup's consistency to "application (verified)", so the promise is: a proof
that does not decode, is not a JSON object, or was copied over from another backup never makes
`show` or `catalog rebuild` fail, and never marks a backup verified.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image
from .test_encryption import EncryptedSv

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow

DAMAGE = {
    "not json": b"\x00\x01 not a proof",
    "a list": b"[1, 2, 3]",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "another backup's": None,  # filled in by the test: a verified proof naming another backup
}


def _two_backups(sv: Stackvault, tmp_path: Path) -> list[str]:
    image = make_random_image(tmp_path / "disk.img", MIB, random.Random(7))
    first = sv.backup(image, level="full")["backup_id"]
    second = sv.backup(image)["backup_id"]
    return [first, second]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_damaged_proof_stops_neither_show_nor_catalog_rebuild(tmp_path: Path, damage: str, encrypted: bool) -> None:
    sv = EncryptedSv(tmp_path / "sv") if encrypted else Stackvault(tmp_path / "sv")
    sv.run("init", *(["--encrypt"] if encrypted else []), "--block-size", "64KiB")
    first, second = _two_backups(sv, tmp_path)
    raw = DAMAGE[damage]
    if raw is None:
        raw = json.dumps({"backup_id": first, "status": "verified"}).encode()
    (sv.repo / "proofs").mkdir(exist_ok=True)
    (sv.repo / "proofs" / f"{second}.json").write_bytes(raw)

    shown = sv.run("show", second).data
    assert "quiesce_proof" not in shown, shown
    assert shown["consistency"] != "application (verified)"

    rebuilt = sv.run("catalog", "rebuild").data
    assert rebuilt["verified_quiesce"] == 0, rebuilt
    listed = {b["backup_id"]: b for b in sv.run("list").data["backups"]}
    assert listed[second]["consistency"] != "application (verified)"
