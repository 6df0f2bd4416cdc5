"""Proof of quiesce: the guest hook's marker read back from the backed-up disk itself.

Fast tests build real disks (MBR, GPT, bare ext4) with the real tools, back them up with the real
CLI and run the proof on the backup; the guest test does it all for real: a TCG guest of the dev
cloud with the hook installed through its agent, a backup through Nova's createImage, and the
verdict `application (verified)`; with the hook removed, a warning that no fresh marker was found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from stackvault.cloud.guest_hook import HOOK_LOG, HOOK_PATH, MARKER_MAGIC, MARKER_PATH, QuiesceMarker, parse_marker
from stackvault.config import load_settings
from stackvault.jobs import quiesce_proof
from stackvault.jobs.context import JobContext

from .test_server_backup import _boot, _leftovers

MiB = 1 << 20


# --- the hook ----------------------------------------------------------------------------------


def test_guest_hook_is_a_valid_posix_sh_script(tmp_path):
    from e2e.helpers import Stackvault

    sv = Stackvault(tmp_path / "sv")
    script = sv.run("guest-hook", json_out=False).stdout
    assert script.startswith("#!/bin/sh\n")
    assert MARKER_PATH in script and "date -u +%s" in script and HOOK_PATH in script and HOOK_LOG in script
    hook = tmp_path / "hook.sh"
    hook.write_text(script)
    shells = [s for s in ("sh", "dash", "busybox") if shutil.which(s)]
    assert shells
    for shell in shells:
        argv = [shell, "sh", "-n", str(hook)] if shell == "busybox" else [shell, "-n", str(hook)]
        out = subprocess.run(argv, capture_output=True, text=True)
        assert out.returncode == 0, f"{shell}: {out.stderr}"
    doc = sv.run("guest-hook").data
    assert doc["path"] == HOOK_PATH and doc["script"].rstrip("\n") == script.rstrip("\n") and doc["steps"]


def test_marker_parsing_refuses_what_the_hook_did_not_write():
    good = f"{MARKER_MAGIC}\nstate=frozen\ntime=1700000000\nnonce=ab12\n"
    assert parse_marker(good) == QuiesceMarker("frozen", 1700000000, "ab12")
    assert parse_marker("I'm frozen\n") is None
    assert parse_marker(good.replace("time=1700000000", "time=soon")) is None
    assert parse_marker("") is None


def test_judge_window_state_and_nonce():
    window = (1000.0, 1030.0)
    assert quiesce_proof.judge(QuiesceMarker("frozen", 1010, "n1"), window, set())[0]
    assert quiesce_proof.judge(QuiesceMarker("frozen", 1000 - 60, "n1"), window, set())[0]  # clock skew allowed
    stale, why = quiesce_proof.judge(QuiesceMarker("frozen", 1000 - 3600, "n1"), window, set())
    assert not stale and "3600 s before the snapshot" in why
    assert not quiesce_proof.judge(QuiesceMarker("frozen", 1010, "n1"), window, {"n1"})[0]
    thawed, why = quiesce_proof.judge(QuiesceMarker("thawed", 1010, "n1"), window, set())
    assert not thawed and "thawed" in why


# --- the proof on real disks, backed up with the real CLI ---------------------------------------


def _disk(tmp_path: Path, label: str, marker: str | None) -> Path:
    """A 64 MiB disk: `label` mbr | gpt (ext4 partition at 1 MiB), bare (ext4 on the whole disk) or
    empty (no file system); the marker file written into the file system with debugfs."""
    disk = tmp_path / f"disk-{label}.raw"
    with open(disk, "wb") as f:
        f.truncate(64 * MiB)
    if label == "empty":
        return disk
    offset = 0 if label == "bare" else MiB
    if label != "bare":
        table = "label: dos\n" if label == "mbr" else "label: gpt\n"
        subprocess.run(["sfdisk", "-q", str(disk)], input=table + "start=2048, type=linux\n", text=True,
                       check=True, capture_output=True)
    size_k = (64 * MiB - offset - (MiB if label == "gpt" else 0)) // 1024
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={offset}", str(disk), f"{size_k}k"], check=True,
                   capture_output=True)
    if marker is not None:
        src = tmp_path / f"marker-{label}"
        src.write_text(marker)
        subprocess.run(["debugfs", "-w", "-R", f"write {src} {MARKER_PATH.lstrip('/')}", f"{disk}?offset={offset}"],
                       check=True, capture_output=True)
    return disk


@pytest.fixture
def sv(tmp_path):
    from e2e.helpers import Stackvault

    user = Stackvault(tmp_path / "sv")
    user.run("init", "--block-size", "64KiB")
    return user


def _prove(sv, disk: Path, window: tuple[float, float]) -> dict:
    backup_id = sv.run("backup", "--source", f"file:{disk}", "--level", "full").data["backup_id"]
    ctx = JobContext(load_settings(None, repo=str(sv.repo), workdir=str(sv.workdir), catalog=sv.catalog_url))
    record = ctx.repo.get_backup(backup_id)
    record.source = {"kind": "server", "server": {"id": "srv", "root_device_name": f"/dev/{record.disks[0].name}"}}
    record.consistency = "unknown"
    return quiesce_proof.prove_quiesce(ctx, record, window)


@pytest.mark.parametrize("label", ["mbr", "gpt", "bare"])
def test_fresh_marker_is_verified_and_shown_by_list_and_show(sv, tmp_path, label):
    now = int(time.time())
    disk = _disk(tmp_path, label, f"{MARKER_MAGIC}\nstate=frozen\ntime={now}\nnonce={uuid.uuid4().hex}\n")
    proof = _prove(sv, disk, (now - 5, now + 5))
    assert proof["status"] == "verified", proof
    assert proof["consistency"] == "application (verified)"
    [row] = sv.run("list").data["backups"]
    assert row["consistency"] == "application (verified)"
    shown = sv.run("show", row["backup_id"]).data
    assert shown["consistency"] == "application (verified)" and shown["quiesce_proof"]["status"] == "verified"
    assert "Consistency: application (verified)" in sv.run("show", row["backup_id"], json_out=False).stdout
    stored = json.loads((sv.repo / "proofs" / f"{row['backup_id']}.json").read_bytes())
    assert stored["marker"]["time"] == now


def test_old_or_thawed_marker_is_stale_and_a_missing_one_is_said(sv, tmp_path):
    now = int(time.time())
    old = _disk(tmp_path, "mbr", f"{MARKER_MAGIC}\nstate=frozen\ntime={now - 86400}\nnonce=n-old\n")
    proof = _prove(sv, old, (now - 5, now + 5))
    assert proof["status"] == "stale" and "before the snapshot" in proof["message"]

    thawed = _disk(tmp_path, "gpt", f"{MARKER_MAGIC}\nstate=thawed\ntime={now}\nnonce=n-thawed\n")
    proof = _prove(sv, thawed, (now - 5, now + 5))
    assert proof["status"] == "stale" and "thawed" in proof["message"]

    none = _disk(tmp_path, "bare", None)
    proof = _prove(sv, none, (now - 5, now + 5))
    assert proof["status"] == "missing" and "hook" in proof["message"]
    assert {b["consistency"] for b in sv.run("list").data["backups"]} == {None}


def test_disk_without_ext4_is_skipped_cheaply(sv, tmp_path):
    proof = _prove(sv, _disk(tmp_path, "empty", None), (0, time.time()))
    assert proof["status"] == "skipped" and "no ext2/3/4" in proof["message"]
    assert proof["duration_s"] < 1.0  # a block or two read, nothing restored
    assert not (sv.repo / "proofs").exists() or not list((sv.repo / "proofs").iterdir())


# --- a real guest --------------------------------------------------------------------------------


def _hypervisor(devcloud):
    from devcloud.guest.hypervisor import Hypervisor

    return Hypervisor(devcloud.state_dir / "nova" / "guests",
                      image_cache=Path(os.environ.get("DEVCLOUD_GUEST_CACHE") or devcloud.ctx.cache_dir / "guest"))


def booted_guest(devcloud, conn, cloud_objects, prefix: str):
    """A real TCG guest with its agent answering: (its name, the server, the hypervisor that runs it)."""
    if devcloud.ctx.fast:
        pytest.skip("needs real guests: run without DEVCLOUD_FAST")
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    server = _boot(conn, cloud_objects, name, "sv-agent-quiesce")
    hv = _hypervisor(devcloud)
    hv.wait_agent(server.id, timeout=240)
    return name, server, hv


@pytest.mark.devcloud
@pytest.mark.guest
@pytest.mark.slow
def test_real_guest_with_the_hook_is_verified_and_without_it_warned(user, devcloud, conn, cloud_objects):
    name, server, hv = booted_guest(devcloud, conn, cloud_objects, "proof")
    script = user.run("guest-hook", json_out=False).stdout
    hv.guest_write_file(server.id, HOOK_PATH, script.encode())
    code, _, err = hv.guest_exec(server.id, ["/bin/chmod", "755", HOOK_PATH])
    assert code == 0, err

    first = user.run("backup", "--server", name, "--level", "full", timeout=900).data["servers"][0]
    assert first["status"] == "success", first
    assert first["consistency"] == "application (verified)", first
    assert first["quiesce_proof"]["status"] == "verified"
    log = hv.guest_read_file(server.id, HOOK_LOG).decode()
    assert f"{HOOK_PATH} freeze" in log and f"{HOOK_PATH} thaw" in log
    in_guest = parse_marker(hv.guest_read_file(server.id, MARKER_PATH).decode())
    assert in_guest is not None and in_guest.state == "thawed"
    assert in_guest.nonce == first["quiesce_proof"]["marker"]["nonce"]  # the disk held this freeze's marker
    listed = user.run("list", "--server", name).data["backups"]
    assert [b["consistency"] for b in listed] == ["application (verified)"]

    code, _, err = hv.guest_exec(server.id, ["/bin/rm", "-f", HOOK_PATH])
    assert code == 0, err
    hv.guest_exec(server.id, ["/bin/sync"])
    second = user.run("backup", "--server", name, timeout=900).data["servers"][0]
    assert second["status"] == "warning" and second["consistency"] == "application", second
    assert any("no fresh quiesce marker" in w for w in second["warnings"]), second
    shown = user.run("show", second["backup_id"], json_out=False).stdout
    assert "Quiesce:     stale" in shown
    assert _leftovers(user) == {"images": [], "volumes": [], "snapshots": []}
