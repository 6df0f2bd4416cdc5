"""Options as users set them: STACKVAULT_* environment instead of flags; two backups at the same time."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

from .helpers import MIB, Stackvault, make_random_image, sha256_file, stackvault_command


def test_environment_variables_stand_in_for_the_options(sv: Stackvault, rng: random.Random,
                                                        tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    env = sv.env() | {"STACKVAULT_REPO": str(sv.repo), "STACKVAULT_WORKDIR": str(sv.workdir),
                      "STACKVAULT_CATALOG": sv.catalog_url}

    def run(*args: str) -> dict:
        p = subprocess.run(stackvault_command() + ["--json", *args], capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stderr}"
        return json.loads(p.stdout)

    run("init", "--block-size", "64KiB")
    bid = run("backup", "--source", f"file:{src}")["backup_id"]
    assert (sv.repo / "config").exists(), "STACKVAULT_REPO was not used"
    assert list(sv.workdir.rglob("*.sha")), "STACKVAULT_WORKDIR was not used"
    assert sv.catalog_file.exists(), "STACKVAULT_CATALOG was not used"
    # the same repository seen through the flags
    assert sv.list_ids() == [bid]
    out = tmp_path / "out.raw"
    run("restore", bid, "--to", f"file:{out}")
    assert sha256_file(out) == sha256_file(src)


def test_two_backups_of_different_disks_at_the_same_time(repo: Stackvault, rng: random.Random,
                                                         tmp_path: Path) -> None:
    a = make_random_image(tmp_path / "a.img", 32 * MIB, rng)
    b = make_random_image(tmp_path / "b.img", 32 * MIB, rng)
    procs = [repo.popen("backup", "--source", f"file:{p}", "--level", "full") for p in (a, b)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"concurrent backup failed: {err}"
        reports.append(json.loads(out))
    assert sorted(repo.list_ids()) == sorted(r["backup_id"] for r in reports)
    repo.run("verify", "--deep")
    for src, report in zip((a, b), reports, strict=True):
        out = repo.restore(report["backup_id"], tmp_path / f"out-{src.name}")
        assert sha256_file(out) == sha256_file(src)
