"""/v1/volumes through `stackvault api` on the dev cloud's real Keystone and Cinder: a member lists
their project's volumes with the newest backup of each; another project's member sees neither the
volume nor its backup; an admin sees it with `all_projects`."""

from __future__ import annotations

import openstack
import pytest

from .test_api_keystone import Api
from .test_api_keystone import api as api  # a fixture, used by its name

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]  # the module fixture (~1 min)


def test_a_members_volumes_show_their_last_backup_to_their_project_only(api: Api):
    member = openstack.connect(auth_url=api.auth_url, token=api.a.tokens["member"], auth_type="v3token",
                               project_id=api.a.id, load_yaml_config=False, load_envvars=False)
    volume = member.block_storage.create_volume(size=1, name="sv-api-vol-a")
    try:
        member.block_storage.wait_for_status(volume, "available", failures=["error"], wait=120)
        report = api.cli.run("backup", "--volume", volume.id, "--project", api.a.id, "--level", "full").data
        [item] = report["volumes"]
        assert item["status"] == "success", item

        listed = api.get("/v1/volumes", api.a.tokens["reader"])
        assert listed.status_code == 200, listed.text
        mine = {v["id"]: v for v in listed.json()["volumes"]}
        assert mine[volume.id]["name"] == "sv-api-vol-a" and mine[volume.id]["project_id"] == api.a.id
        assert mine[volume.id]["last_backup"]["backup_id"] == item["backup_id"], mine[volume.id]
        assert mine[volume.id]["protected"] is False  # no policy of the fixture names volumes
        backups = {b["backup_id"]: b for b in api.get("/v1/backups", api.a.tokens["reader"]).json()["backups"]}
        assert backups[item["backup_id"]]["project_id"] == api.a.id

        theirs = api.get("/v1/volumes", api.b.tokens["member"]).json()["volumes"]
        assert volume.id not in {v["id"] for v in theirs}
        assert item["backup_id"] not in {b["backup_id"] for b in
                                         api.get("/v1/backups", api.b.tokens["member"]).json()["backups"]}
        assert api.get(f"/v1/backups/{item['backup_id']}", api.b.tokens["member"]).status_code == 404

        everyone = api.get("/v1/volumes", api.admin_token, all_projects="1").json()["volumes"]
        assert volume.id in {v["id"] for v in everyone}
    finally:
        member.block_storage.delete_volume(volume, ignore_missing=True)
