"""The policies written through the API live in the catalog alone, which `recover` rebuilds from the
backup records: `state backup` saves them into the repository, and a proxy recovered from the
repository alone, or a `state restore`, has them back, without undoing a policy changed since."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from stackvault.catalog import Catalog
from stackvault.catalog.policies import StoredPolicies

from .helpers import MIB, Stackvault, make_random_image

WEB = {"project": "p-one", "schedule": "15 1 * * *", "servers": ["web-*"], "retention": {"keep_daily": 7}}
DB = {"project": "p-two", "schedule": "0 2 * * *", "all": True}


def _stored(sv: Stackvault) -> StoredPolicies:
    repo_id = json.loads((sv.repo / "config").read_text())["id"]
    return StoredPolicies(Catalog(sv.catalog_url), repo_id)


@pytest.fixture
def sv(tmp_path: Path) -> Stackvault:
    sv = Stackvault(tmp_path / "sv")
    sv.init("64KiB")
    sv.backup(make_random_image(tmp_path / "disk.img", MIB, random.Random(7)))
    stored = _stored(sv)
    assert stored.add("web", WEB) and stored.add("db", DB)
    return sv


def test_a_proxy_recovered_from_the_repository_has_the_api_policies(sv: Stackvault, tmp_path: Path) -> None:
    saved = sv.run("state", "backup").data
    assert saved["policies"] == 2, saved
    fresh = Stackvault(tmp_path / "new-proxy")
    fresh.repo = sv.repo
    done = fresh.run("recover", "--yes").data  # a plain repository: the saved state needs a yes
    assert done["policies"] == ["db", "web"] and done["catalog"]["backups"] == 1, done
    assert _stored(fresh).all() == {"db": DB, "web": WEB}
    text = fresh.run("recover", "--yes", json_out=False).stdout
    assert "put back" not in text, "a second recover finds them in the catalog already"


def test_state_restore_puts_back_only_what_the_catalog_lacks(sv: Stackvault) -> None:
    sv.run("state", "backup")
    stored = _stored(sv)
    changed = {**WEB, "schedule": "45 4 * * *"}
    assert stored.replace("web", changed) and stored.remove("db")
    done = sv.run("state", "restore", "--yes").data
    assert done["policies"] == ["db"], done
    assert stored.all() == {"db": DB, "web": changed}, "the policy changed since the saved state stays changed"
