"""The proxy's disaster-recovery drill (docs/disaster-recovery.md), as an operator would run it.

Servers are backed up over a few "days" of changes; the proxy then loses its working directory,
catalog and config; a fresh proxy with only the repository location and cloud credentials recovers,
its next backup is an Incremental storing only the new change, and both old and new backups
restore to the bytes they were taken from.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from .conftest import CloudUser, qemu_io_write, raw_copy, same_disk
from .test_server_backup import _boot, _disks

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]
MiB = 1 << 20


def test_disaster_recovery_drill(user: CloudUser, fast_cloud, devcloud, conn, cloud_objects, tmp_path):
    name = f"dr-{uuid.uuid4().hex[:6]}"
    server = _boot(conn, cloud_objects, name, "sv-agent", data_gb=1)
    disks = _disks(devcloud, conn, server)
    config_text = user.config.read_text()
    user.run("--config", str(user.config), "state", "backup")  # the seed's daily job, before any backup

    versions = []
    for day in range(3):
        qemu_io_write(*disks["vdb"], offset=(10 + day) * MiB, pattern=0x30 + day)
        versions.append(raw_copy(*disks["vdb"], tmp_path / f"vdb-day{day}.raw"))
        level = "full" if day == 0 else "incremental"
        item = user.run("backup", "--server", name, "--level", level).data["servers"][0]
        assert item["status"] == "success" and item["level"] == level, item
    user.run("state", "backup")
    first_backup = user.run("list", "--server", name).data["backups"][0]["backup_id"]

    # The disaster: working state, catalog and config are gone.
    shutil.rmtree(user.workdir)
    user.catalog_file.unlink()
    user.config.unlink()

    fresh = CloudUser(tmp_path / "new-proxy")
    fresh.repo = user.repo  # only the repository location ...
    fresh.clouds_yaml = user.clouds_yaml  # ... and the cloud credentials
    fresh.config = fresh.root / "stackvault.toml"
    # a plain repository: nothing authenticates the saved config
    out = fresh.run("recover", "--config-out", str(fresh.config), "--yes").data
    assert out["config"] == str(fresh.config) and fresh.config.read_text() == config_text
    assert out["catalog"]["backups"] == 3
    assert len(fresh.run("list", "--server", name).data["backups"]) == 3

    qemu_io_write(*disks["vdb"], offset=600 * MiB, pattern=0x66)  # 64 KiB changed after the disaster
    latest = raw_copy(*disks["vdb"], tmp_path / "vdb-after.raw")
    item = fresh.run("backup", "--server", name).data["servers"][0]
    assert item["level"] == "incremental", item
    vdb = next(d for d in item["disks"] if d["name"] == "vdb")
    assert vdb["blocks_changed"] == 1 and vdb["bytes_stored"] <= 128 * 1024, vdb
    assert not any("working state" in w for w in item["warnings"]), item["warnings"]

    for backup_id, expected in ((first_backup, versions[0]), (item["backup_id"], latest)):
        target = tmp_path / f"{backup_id}.raw"
        fresh.run("restore", backup_id, "--disk", "vdb", "--to", f"file:{target}")
        assert same_disk(target, expected), f"vdb of backup {backup_id} differs"
