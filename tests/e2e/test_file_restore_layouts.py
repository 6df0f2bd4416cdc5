"""The file systems found on a backup's disk are kept in the working directory: the next `files`
command on that disk mounts them without listing and inspecting the disk again (seconds under QEMU
TCG), and a kept layout that cannot be read is found again rather than trusted.

The disk: an MBR table with two ext4 partitions. `slow`: each command starts the appliance under TCG.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .guest_disks import RUN_TIMEOUT, GuestStackvault, ext4_image, partitioned_disk
from .helpers import MIB

pytestmark = pytest.mark.slow

PART_SIZE = 16 * MIB


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("layouts")
    parts = []
    for n in (1, 2):
        tree = tmp / f"tree{n}"
        tree.mkdir()
        (tree / f"only-on-{n}.txt").write_text(f"partition {n}\n")
        parts.append(ext4_image(tree, tmp / f"p{n}.ext4", PART_SIZE))
    disk = partitioned_disk(tmp / "disk.raw", parts, PART_SIZE)
    sv = GuestStackvault(tmp / "sv")
    sv.init("64KiB")
    return {"sv": sv, "backup": sv.backup(disk)["backup_id"]}


def _top(world: dict) -> set[str]:
    listed = world["sv"].run("files", world["backup"], "ls", "/", timeout=RUN_TIMEOUT).data["entries"]
    return {e["path"] for e in listed}


def _kept(sv: GuestStackvault) -> Path:
    [layout] = sv.workdir.glob("*/file-layouts/*.json")
    return layout


def test_a_kept_layout_is_used_and_a_damaged_one_found_again(world: dict) -> None:
    sv = world["sv"]
    assert _top(world) == {"/sda1", "/sda2"}
    kept = _kept(sv)
    assert json.loads(kept.read_text()) == {"filesystems": {"/dev/sda1": "ext4", "/dev/sda2": "ext4"},
                                            "os_root": None}

    # the next command mounts what the kept layout names, without looking at the disk again
    kept.write_text(json.dumps({"filesystems": {"/dev/sda1": "ext4"}, "os_root": None}))
    assert _top(world) == {"/only-on-1.txt", "/lost+found"}

    kept.write_text('{"filesystems": ["not", "a", "layout"]')
    assert _top(world) == {"/sda1", "/sda2"}
    assert json.loads(_kept(sv).read_text())["filesystems"] == {"/dev/sda1": "ext4", "/dev/sda2": "ext4"}
