"""A local repository and working directory as an older version or an operator left them.

What the hardened local backend refuses (links inside the repository) must never read as "nothing
here" where that would destroy data, and what an older version made open to other users is made
private when the proxy next uses it.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from pathlib import Path

from .helpers import MIB, Stackvault, make_random_image, one_error, sha256_file, tree_listing


def test_gc_deletes_nothing_when_backups_is_a_link(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """An operator who moved `backups/` to another disk and linked it back: gc would see no backup
    at all, and every chunk would look unreferenced."""
    src = make_random_image(tmp_path / "disk.img", 2 * MIB, rng)
    bid = repo.backup(src, level="full")["backup_id"]
    moved = tmp_path / "elsewhere"
    shutil.move(str(repo.repo / "backups"), moved)
    (repo.repo / "backups").symlink_to(moved, target_is_directory=True)
    chunks_before = tree_listing(repo.repo / "chunks")

    one_error(repo.run("gc", expect=None), "backups", "link", rc=1)
    assert tree_listing(repo.repo / "chunks") == chunks_before, "gc deleted chunks while it could not list backups"

    (repo.repo / "backups").unlink()
    shutil.move(str(moved), repo.repo / "backups")
    repo.run("gc")
    assert sha256_file(repo.restore(bid, tmp_path / "out.raw")) == sha256_file(src)


def test_what_an_older_version_left_open_is_made_private(repo: Stackvault, rng: random.Random,
                                                         tmp_path: Path) -> None:
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    repo.backup(src, level="full")
    catalog = repo.catalog_file
    opened = [repo.repo, repo.workdir, catalog]
    for path in opened:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    repo.run("list")
    for path in opened:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, f"{path} is still {oct(mode)} after the proxy used it"


def test_a_link_to_a_device_is_not_replaced_by_a_file(repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    """`--to file:/dev/disk/by-id/X --force` names a device through a link: the link must not become
    a regular file of the disk's size (on /dev that is memory)."""
    src = make_random_image(tmp_path / "disk.img", MIB, rng)
    bid = repo.backup(src, level="full")["backup_id"]
    link = tmp_path / "by-id-disk"
    link.symlink_to("/dev/null")

    one_error(repo.run("restore", bid, "--to", f"file:{link}", "--force", expect=None), "not a regular file", rc=2)
    assert link.is_symlink(), "the link was replaced"
