"""Policies kept in the catalog (those the API writes), on SQLite and PostgreSQL: kept per repository,
one per name, and in force beside the config's, read by the config's own parser; the config's wins a
name, and a stored policy that no longer parses is left out with the parser's words."""

from __future__ import annotations

from pathlib import Path

from stackvault.catalog import Catalog
from stackvault.catalog.policies import StoredPolicies
from stackvault.config import load_settings
from stackvault.service.policies import policies_in_force

WEB = {"project": "p-one", "schedule": "15 1 * * *", "servers": ["web-*"], "full_on": ["sun"],
       "retention": {"keep_daily": 7, "keep_within": "2d"}, "verify_sample_percent": 10}
WEB_TOML = '''
[policy.web]
project = "p-one"
schedule = "15 1 * * *"
servers = ["web-*"]
full_on = ["sun"]
retention = { keep_daily = 7, keep_within = "2d" }
verify_sample_percent = 10
'''


def test_policies_are_kept_per_repository_one_per_name(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    try:
        mine, theirs = StoredPolicies(catalog, "repo-1"), StoredPolicies(catalog, "repo-2")
        assert mine.add("web", WEB)
        assert not mine.add("web", {**WEB, "schedule": "0 3 * * *"})  # the first one stays
        assert mine.get("web") == WEB and theirs.get("web") is None
        assert theirs.add("web", {"project": "p-two", "all": True})
        assert mine.replace("web", {**WEB, "schedule": "0 3 * * *"})
        assert mine.all() == {"web": {**WEB, "schedule": "0 3 * * *"}}
        assert not mine.replace("db", WEB)
        assert mine.remove("web") and not mine.remove("web")
        assert mine.all() == {} and theirs.all() == {"web": {"project": "p-two", "all": True}}
    finally:
        catalog.close()


def test_a_stored_policy_is_the_config_table_of_the_same_keys(catalog_url: str, tmp_path: Path) -> None:
    config = tmp_path / "sv.toml"
    config.write_text(WEB_TOML.replace("[policy.web]", "[policy.db]"))
    settings = load_settings(str(config))
    catalog = Catalog(catalog_url)
    try:
        stored = StoredPolicies(catalog, "repo-1")
        stored.add("web", WEB)
        stored.add("db", {"project": "p-two", "all": True})  # the config has a db: the config's is in force
        stored.add("broken", {**WEB, "full_on": ["someday"]})
        found = policies_in_force(settings, stored)
    finally:
        catalog.close()
    (tmp_path / "web.toml").write_text(WEB_TOML)
    assert found.policies["web"] == load_settings(str(tmp_path / "web.toml")).policies["web"]
    assert found.policies["db"] == settings.policies["db"] and found.policies["db"].project == "p-one"
    assert set(found.policies) == {"proxy-state", "db", "web"} and found.stored == {"web"}
    assert found.left_out == {
        "db": "the config has a policy of that name, which is the one in force",
        "broken": "full_on of policy 'broken' in the catalog names a day that is not one of mon, tue, wed, thu, "
                  'fri, sat, sun (write e.g. ["sun"])'}

