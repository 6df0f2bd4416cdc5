"""File restore meets a tenant's names and a proxy's limits: `files cat` appends to what stdout is
and prints nothing but the bytes; a name that is not UTF-8, or that this host cannot hold, is one
error line; a name with terminal escapes or a newline is shown escaped (as `ls -b` does).

One ext4 file system on the whole disk (shown at `/`), made by `mke2fs -d` from a tree holding such
names. Every `files` command starts a libguestfs appliance (QEMU TCG: about 15 s), so the module is
`slow`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, one_error

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 600
DATA = os.urandom(300_000)
ESCAPING = "esc\x1b]0;owned\x07\nfake line"
LONG = "n" * 250


class _Guest(Stackvault):
    def env(self) -> dict[str, str]:
        return {**super().env(), "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("names")
    tree = tmp / "tree"
    (tree / "latin1").mkdir(parents=True)
    (tree / "data.bin").write_bytes(DATA)
    (tree / ESCAPING).write_bytes(b"x")
    with open(os.path.join(os.fsencode(tree / "latin1"), b"caf\xe9.txt"), "wb") as f:
        f.write(b"latin-1 name")
    deep = tree / "deep"
    deep.mkdir()
    for n in range(3):
        (deep / f"{LONG}{n}").write_bytes(b"y")
    disk = tmp / "disk.raw"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(disk), f"{16 * MIB // 1024}k"],
                   check=True, capture_output=True)
    sv = Stackvault(tmp / "sv")
    sv.init("64KiB")
    backup = sv.backup(disk, level="full")["backup_id"]
    return {"sv": _Guest(sv.root), "backup": backup, "tmp": tmp}


def _run(world: dict, *args: str, json_out: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
    sv = world["sv"]
    return subprocess.run(sv.argv(["files", world["backup"], *args], json_out=json_out), env=sv.env(),
                          timeout=RUN_TIMEOUT, **kwargs)  # type: ignore[call-overload]  # capture options vary


def test_cat_appends_to_stdout_and_prints_only_the_bytes(world: dict, tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"what was there before\n")
    with open(log, "ab") as out:
        proc = _run(world, "cat", "/data.bin", stdout=out, stderr=subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr
    assert log.read_bytes() == b"what was there before\n" + DATA, "cat >> log keeps the log and adds only the bytes"


def test_a_name_that_is_not_utf8_is_one_line_and_its_directory_extracts(world: dict, tmp_path: Path) -> None:
    res = world["sv"].run("files", world["backup"], "ls", "/latin1", expect=None, timeout=RUN_TIMEOUT)
    one_error(res, "UTF-8", rc=1)
    world["sv"].run("files", world["backup"], "get", "/latin1", "--to", str(tmp_path), timeout=RUN_TIMEOUT)
    assert os.listdir(os.fsencode(tmp_path / "latin1")) == [b"caf\xe9.txt"]


def test_a_name_too_long_for_this_host_is_one_line(world: dict, tmp_path: Path) -> None:
    to = tmp_path
    while len(str(to)) < 3700:
        to = to / ("d" * 200)
    to.mkdir(parents=True)
    res = world["sv"].run("files", world["backup"], "get", "/deep", "--to", str(to), expect=None,
                          timeout=RUN_TIMEOUT)
    one_error(res, "too long", rc=1)
    assert os.listdir(to) == [], "the partial extraction is removed"


def test_names_with_escapes_are_shown_escaped(world: dict) -> None:
    proc = _run(world, "ls", "/", json_out=False, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "\x1b" not in out and "\x07" not in out
    assert "esc\\033]0;owned\\a\\nfake line" in out
    assert "fake line" not in out.replace("\\nfake line", ""), "no name starts a line of its own"
    assert len(out.splitlines()) == len({"data.bin", "latin1", "deep", ESCAPING, "lost+found"})
