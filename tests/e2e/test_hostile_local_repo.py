"""A local repository is the proxy's alone, and nothing planted in it reaches outside it.

Symbolic links planted inside the repository (a directory on an object's path, or an object itself) and
backup records naming crafted keys must never make `prune`, `gc`, `verify`, `backup` or `restore` read,
write or delete a file outside the repository; every file the proxy makes is private to its user even
under a permissive umask; and a repository path that is a file, lies under one or cannot be read gets
the one-line error.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .helpers import MIB, Stackvault, make_random_image, sha256_file, tree_listing
from .test_bad_input import assert_clear_error

# Many cases, each running the CLI several times: the slow tier (CI runs it after the default one).
pytestmark = pytest.mark.slow


def _outside(tmp_path: Path) -> Path:
    """A directory outside the repository holding a file a planted link or key would reach."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "0.fidx").write_bytes(b"precious data outside the repository")
    (out / "victim").write_bytes(b"precious data outside the repository")
    return out


def _no_traceback(res) -> None:  # a helpers.Result
    assert "Traceback" not in res.stderr, res.describe()
    assert len(res.error_lines()) <= 1, res.describe()


def test_prune_and_gc_never_delete_through_a_planted_directory_link(repo: Stackvault, rng: random.Random,
                                                                     tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    old = repo.backup(src, level="full")["backup_id"]
    new = repo.backup(src, level="full")["backup_id"]
    outside = _outside(tmp_path)
    before = tree_listing(outside)
    planted = repo.repo / "indexes" / old
    shutil.rmtree(planted)
    planted.symlink_to(outside, target_is_directory=True)

    for args in (("prune", "--keep-last", "1"), ("gc",), ("verify",), ("verify", "--deep")):
        _no_traceback(repo.run(*args, expect=None))
        assert tree_listing(outside) == before, f"`{' '.join(args)}` changed a file outside the repository"
    assert repo.list_ids() == [new]
    out = repo.restore(new, tmp_path / "new.raw")
    assert sha256_file(out) == sha256_file(src)


@pytest.mark.parametrize("key", ["indexes/../../../outside/victim", "/{outside}/victim", "indexes/x//0.fidx",
                                 "indexes/./x/0.fidx", "indexes/x/0.fidx\n"])
def test_a_record_naming_a_crafted_key_never_reaches_outside(repo: Stackvault, rng: random.Random,
                                                              tmp_path: Path, key: str) -> None:
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    crafted = repo.backup(src, level="full")["backup_id"]
    keep = repo.backup(src, level="full")["backup_id"]
    outside = _outside(tmp_path)
    before = tree_listing(outside)
    record_file = repo.repo / "backups" / f"{crafted}.json"
    doc = json.loads(record_file.read_bytes())
    doc["disks"][0]["index"] = key.format(outside=str(outside).strip("/"))
    record_file.write_text(json.dumps(doc))

    for args in (("verify",), ("verify", "--deep"), ("restore", crafted, "--to", f"file:{tmp_path / 'r.raw'}"),
                 ("prune", "--keep-last", "1"), ("gc",)):
        res = repo.run(*args, expect=None)
        _no_traceback(res)
        assert tree_listing(outside) == before, f"`{' '.join(args)}` changed a file outside the repository"
    assert not (tmp_path / "r.raw").exists()
    assert keep in repo.repository_ids()


def test_chunks_behind_a_planted_link_are_neither_read_nor_written(repo: Stackvault, rng: random.Random,
                                                                  tmp_path: Path) -> None:
    """The chunk directories moved out and linked back: the repository no longer holds them."""
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    bid = repo.backup(src, level="full")["backup_id"]
    outside = tmp_path / "outside"
    shutil.move(repo.repo / "chunks", outside)
    (repo.repo / "chunks").symlink_to(outside, target_is_directory=True)
    before = tree_listing(outside)

    verify = repo.run("verify", "--deep", expect=None)
    assert verify.rc == 3 and verify.data["bad_chunks"], verify.describe()
    assert all(c["problem"] == "missing from the repository" for c in verify.data["bad_chunks"])
    assert_clear_error(repo.run("restore", bid, "--to", f"file:{tmp_path / 'r.raw'}", expect=None), "chunk", rc=3)
    assert not (tmp_path / "r.raw").exists() and not (tmp_path / "r.raw.partial").exists()
    res = repo.run("backup", "--source", f"file:{src}", "--level", "full", expect=None)
    assert_clear_error(res, "symbolic link", rc=1)
    assert tree_listing(outside) == before, "a backup wrote through the planted link"


def test_a_chunk_replaced_by_a_directory_is_reported_by_verify(repo: Stackvault, rng: random.Random,
                                                               tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    bid = repo.backup(src, level="full")["backup_id"]
    chunk = sorted((repo.repo / "chunks").rglob("*"))[-1]
    assert chunk.is_file()
    chunk.unlink()
    chunk.mkdir()
    for deep in ([], ["--deep"]):
        res = repo.run("verify", *deep, expect=None)
        assert res.rc == 3, res.describe()
        assert [c["chunk"] for c in res.data["bad_chunks"]] == [chunk.name], res.describe()
        _no_traceback(res)
    assert_clear_error(repo.run("restore", bid, "--to", f"file:{tmp_path / 'r.raw'}", expect=None), chunk.name, rc=3)


def _modes_open_to_others(*roots: Path) -> list[str]:
    loose = []
    for root in roots:
        for p in [root, *root.rglob("*")]:
            st = p.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                loose.append(f"{p} {stat.filemode(st.st_mode)}")
    return loose


def test_every_file_the_proxy_makes_is_private_under_a_permissive_umask(tmp_path: Path, rng: random.Random) -> None:
    old = os.umask(0o022)  # what the children inherit: a service manager's usual default
    try:
        sv = Stackvault(tmp_path / "sv")
        sv.catalog_file = tmp_path / "sv" / "db" / "catalog.db"
        sv.catalog_file.parent.mkdir(mode=0o700)
        sv.init("64KiB")
        src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
        bid = sv.backup(src, level="full")["backup_id"]
        sv.backup(src, level="incremental")
        restored = tmp_path / "restored"
        restored.mkdir(mode=0o700)
        sv.restore(bid, restored / "disk.raw")
        sv.restore(bid, restored / "disk.qcow2", fmt="qcow2")
        sv.run("verify")
        sv.run("catalog", "rebuild")
        sv.run("state", "rebuild")
    finally:
        os.umask(old)
    assert not _modes_open_to_others(sv.repo, sv.workdir, sv.catalog_file.parent, restored)


def test_repository_path_that_is_a_file_or_lies_under_one(tmp_path: Path) -> None:
    for where in ("file", "under-file"):
        sv = Stackvault(tmp_path / where)
        blocker = sv.root / "blocker"
        blocker.write_bytes(b"not a repository")
        sv.repo = blocker if where == "file" else blocker / "repo"
        for args in (("init",), ("list",), ("verify",), ("backup", "--source", f"file:{blocker}")):
            assert_clear_error(sv.run(*args, expect=None), str(sv.repo), rc=None)
        assert blocker.read_bytes() == b"not a repository"


def _as_nobody() -> list[str] | None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "true"],
                           capture_output=True)
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if probe.returncode == 0 else None


def test_repository_not_readable_by_this_user(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    repo.backup(src, level="full")
    before = tree_listing(repo.repo)
    other = tmp_path / "nobody"
    other.mkdir()
    other.chmod(0o777)
    tmp_path.chmod(0o755)
    argv = repo.argv(["verify"], json_out=False, catalog=f"sqlite:///{other / 'catalog.db'}")
    argv[argv.index("--workdir") + 1] = str(other / "work")
    env = repo.env() | {"HOME": str(other)}
    res = subprocess.run(prefix + argv, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("stackvault: error:")]
    assert len(lines) == 1 and "not readable" in lines[0] and str(repo.repo) in lines[0], res.stderr
    assert tree_listing(repo.repo) == before
