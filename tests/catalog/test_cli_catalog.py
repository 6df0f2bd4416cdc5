"""The command line with its catalog on PostgreSQL (and SQLite), and proxies writing to one catalog at once.

Each run is the real `stackvault` CLI in a subprocess, as a user types it, with `--catalog URL`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.helpers import KIB, Stackvault, make_random_image

from stackvault.catalog import Catalog


@dataclass
class SharedCatalogSetup(Stackvault):
    """A user's setup whose catalog is the given URL (a PostgreSQL database) instead of a file of its own."""

    url: str = ""

    @property
    def catalog_url(self) -> str:
        return self.url


def test_cli_init_backup_list_and_rebuild_on_the_catalog(catalog_url: str, tmp_path: Path) -> None:
    sv = SharedCatalogSetup(tmp_path / "sv", url=catalog_url)
    repo_id = sv.init("64KiB").data["id"]
    image = make_random_image(tmp_path / "disk.raw", 256 * KIB, random.Random(1))
    first = sv.backup(image)["backup_id"]
    second = sv.backup(image)["backup_id"]
    assert sv.list_ids() == [first, second]
    catalog = Catalog(catalog_url)
    assert [r.backup_id for r in catalog.backups(repo_id)] == [first, second]  # the rows are in that database

    catalog.remove_backup(first)  # the catalog lost a row: the repository still has it
    rebuilt = sv.run("catalog", "rebuild").data
    assert rebuilt["backups"] == 2
    assert [r.backup_id for r in catalog.backups(repo_id)] == [first, second]
    assert sv.list_ids() == [first, second]


def test_cli_names_an_unreachable_catalog_without_its_password(tmp_path: Path) -> None:
    sv = SharedCatalogSetup(tmp_path / "sv", url="postgresql+psycopg://backup:s3cret@127.0.0.1:1/catalog")
    sv.init("64KiB")  # init does not need the catalog; the first backup does
    image = make_random_image(tmp_path / "disk.raw", 64 * KIB, random.Random(1))
    res = sv.run("backup", "--source", f"file:{image}", expect=2)
    (line,) = res.error_lines()
    assert "cannot open catalog postgresql+psycopg://backup:***@127.0.0.1:1/catalog" in line, res.describe()
    assert "s3cret" not in res.stderr + res.stdout


@pytest.mark.slow
def test_two_proxies_backing_up_into_one_catalog_at_once(catalog_url: str, tmp_path: Path) -> None:
    """Two proxies, each 20 CLI backups of its own small disks into its own repository, at the same time."""
    per_proxy = 20
    proxies = [SharedCatalogSetup(tmp_path / name, url=catalog_url) for name in ("proxy-a", "proxy-b")]
    ids: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def run_proxy(sv: SharedCatalogSetup) -> None:
        try:
            rng = random.Random(sv.root.name)
            done = []
            for i in range(per_proxy):
                image = make_random_image(sv.root / f"disk{i}.raw", 64 * KIB, rng)
                done.append(sv.backup(image)["backup_id"])
            ids[sv.root.name] = done
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    for sv in proxies:
        sv.init("64KiB")
    threads = [threading.Thread(target=run_proxy, args=(sv,)) for sv in proxies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for sv in proxies:
        assert sv.list_ids() == ids[sv.root.name], f"{sv.root.name}: catalog rows lost or out of order"
        assert len(ids[sv.root.name]) == per_proxy
