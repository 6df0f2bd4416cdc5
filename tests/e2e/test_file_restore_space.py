"""`files get` cannot fill the proxy's disk: a tenant's huge sparse file comes back with its holes as
holes, and an extraction that would not fit the target's free space (less the margin) or
`--max-bytes` is refused before its first byte, with one line and exit 2, leaving nothing behind.

The targets are small real file systems (tmpfs mounts), so a hole written as zeros fails for want
of space. Every `files` command starts a libguestfs appliance (QEMU TCG: about 15 s), so the module
is `slow`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from .guest_disks import RUN_TIMEOUT, GuestStackvault, ext4_image, sparse_file, tmpfs
from .helpers import MIB, one_error

pytestmark = pytest.mark.slow

#: The sparse file's length: far more than the target file systems hold.
SPARSE_SIZE = 512 * MIB
SPARSE_DATA = {0: os.urandom(MIB), 300 * MIB: os.urandom(MIB + 5)}
BIG = os.urandom(8 * MIB)
#: The margin the extraction leaves free on its target (jobs.file_restore.FREE_MARGIN).
MARGIN = 64 * MIB


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if os.geteuid() != 0:
        pytest.skip("the targets are tmpfs mounts, made by root")
    tmp = tmp_path_factory.mktemp("space")
    tree = tmp / "tree"
    sparse_file(tree / "sparse.img", SPARSE_SIZE, SPARSE_DATA)
    sparse_file(tree / "dir" / "holes.img", SPARSE_SIZE // 2, {100 * MIB: b"middle"})
    (tree / "dir" / "big.bin").write_bytes(BIG)
    sv = GuestStackvault(tmp / "sv")
    sv.init("64KiB")
    backup = sv.backup(ext4_image(tree, tmp / "disk.raw", 48 * MIB))["backup_id"]
    return {"sv": sv, "backup": backup, "tree": tree}


def _get(world: dict, path: str, to: Path, *extra: str, expect: int | None = 0):
    return world["sv"].run("files", world["backup"], "get", path, "--to", str(to), *extra, expect=expect,
                           timeout=RUN_TIMEOUT)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def test_a_huge_sparse_file_comes_back_with_its_holes(world: dict, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", MARGIN + 32 * MIB) as target:
        res = _get(world, "/sparse.img", target)
        got = target / "sparse.img"
        assert got.stat().st_size == SPARSE_SIZE
        assert _sha256(got) == _sha256(world["tree"] / "sparse.img"), "the bytes, holes read as zeros"
        assert got.stat().st_blocks * 512 <= 4 * MIB, f"holes stay holes: {got.stat().st_blocks * 512} bytes"
        assert res.data["bytes_written"] <= 4 * MIB
        assert not list(target.glob("*.partial"))


def test_a_directory_keeps_its_holes_too(world: dict, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", MARGIN + 32 * MIB) as target:
        _get(world, "/dir", target)
        holes = target / "dir" / "holes.img"
        assert _sha256(holes) == _sha256(world["tree"] / "dir" / "holes.img")
        assert holes.stat().st_blocks * 512 <= MIB, f"holes stay holes: {holes.stat().st_blocks * 512} bytes"
        assert (target / "dir" / "big.bin").read_bytes() == BIG


def test_more_than_max_bytes_is_refused_up_front(world: dict, tmp_path: Path) -> None:
    res = _get(world, "/dir", tmp_path, "--max-bytes", "4M", expect=None)
    one_error(res, "--max-bytes", "nothing was written", rc=2)
    assert os.listdir(tmp_path) == [], "nothing is left behind"


def test_more_than_the_free_space_is_refused_up_front(world: dict, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", MARGIN + 4 * MIB) as target:
        res = _get(world, "/dir/big.bin", target, expect=None)
        one_error(res, "free space", str(target), rc=2)
        assert os.listdir(target) == [], "nothing is left behind"
