"""The policies written through the API live in the catalog alone, which `recover` rebuilds from the
backup records: `state backup` saves them into the repository, and a proxy recovered from the
repository alone has them back, after the operator saw them when the repository is plain; a saved
policy the API would not take is left out with a warning, and `state restore` leaves the catalog's
policies as they are (a policy deleted since stays deleted)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from stackvault.catalog import Catalog
from stackvault.catalog.policies import StoredPolicies

from .helpers import MIB, Stackvault, make_random_image, one_error

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
    # a plain repository: what the saved state would put in the catalog is shown before the yes
    refused = fresh.run("recover", expect=None)
    one_error(refused, "--yes", "policies db (project p-two), web (project p-one)", rc=2)
    done = fresh.run("recover", "--yes").data
    assert done["policies"] == ["db", "web"] and done["catalog"]["backups"] == 1, done
    assert _stored(fresh).all() == {"db": DB, "web": WEB}
    text = fresh.run("recover", "--yes", json_out=False).stdout
    assert "put back" not in text, "a second recover finds them in the catalog already"


def test_state_restore_leaves_the_catalogs_policies_as_they_are(sv: Stackvault) -> None:
    sv.run("state", "backup")
    stored = _stored(sv)
    changed = {**WEB, "schedule": "45 4 * * *"}
    assert stored.replace("web", changed) and stored.remove("db")
    sv.run("state", "restore", "--yes")
    assert stored.all() == {"web": changed}, "a policy deleted or changed since the saved state stays so"


def test_a_saved_policy_the_api_would_refuse_is_left_out_with_a_warning(sv: Stackvault, tmp_path: Path) -> None:
    assert _stored(sv).add("../planted", {"project": "p-three", "all": True})
    assert _stored(sv).add("no-schedule", {"project": "p-three", "all": True, "full_every_days": 10**9})
    sv.run("state", "backup")
    fresh = Stackvault(tmp_path / "new-proxy")
    fresh.repo = sv.repo
    done = fresh.run("recover", "--yes").data
    assert done["policies"] == ["db", "web"], done
    assert len(done["warnings"]) == 2 and "'../planted'" in done["warnings"][0], done
    assert "more than 36500 days" in done["warnings"][1], done
    assert set(_stored(fresh).all()) == {"db", "web"}
