"""The files inside a backup, through the API and the dashboard, on the dev cloud's real Keystone: a
project's member lists `/etc` of their server's backup and downloads a file whose bytes are those
`stackvault files cat` gives; a reader of the project gets a missing path's 404 with the CLI's own
line; another project's member gets the 404 of a backup that does not exist, from the API and from
the dashboard. In Debian's headless Chromium the server's timeline links to the file browser, whose
page is saved as a screenshot, and its Download link gives the file to the logged-in session.

Every listing or download starts a libguestfs appliance (QEMU TCG here: about 15 s), so the tests
ask for as few as they can. Screenshots go to $STACKVAULT_TEST_ARTIFACTS/dashboard-files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .test_api_keystone import Api
from .test_api_keystone import api as api  # a fixture, used by its name
from .test_dashboard_browser import CHROMEDRIVER, CHROMIUM, REPO, Browser

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]  # the API fixture (~1 min), then ~15 s per appliance

APPLIANCE_S = 600  # a generous bound of one appliance's work on a loaded machine


@pytest.fixture(scope="module", autouse=True)
def tcg_appliance() -> Iterator[None]:
    """libguestfs' appliance under TCG, for the API's process and the CLI's (nested KVM hangs here)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIBGUESTFS_BACKEND_SETTINGS", os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"))
        yield


def _cli(api: Api, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(api.cli.argv(list(args), json_out=False), capture_output=True, env=api.cli.env(),
                          timeout=APPLIANCE_S)


def _get(api: Api, resource: str, token: str, **params: str) -> requests.Response:
    return requests.get(api.url + resource, headers={"X-Auth-Token": token}, params=params, timeout=APPLIANCE_S)


def test_a_member_lists_etc_and_downloads_the_bytes_files_cat_gives(api: Api):
    token = api.a.tokens["member"]
    listed = _get(api, f"/v1/backups/{api.a.backup_id}/files", token, path="/etc")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert (body["backup_id"], body["path"]) == (api.a.backup_id, "/etc")
    entries = {e["name"]: e for e in body["entries"]}
    assert entries["hostname"]["type"] == "file" and entries["hostname"]["path"] == "/etc/hostname"
    assert entries["hostname"]["mode"].startswith("-rw")
    assert entries["devcloud"]["type"] == "directory"

    download = _get(api, f"/v1/backups/{api.a.backup_id}/files/content", token, path="/etc/hostname",
                    disk=body["disk"])
    assert download.status_code == 200, download.text
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert "filename=hostname" in download.headers["Content-Disposition"]
    assert download.headers["Content-Type"] == "application/octet-stream"
    cat = _cli(api, "files", api.a.backup_id, "cat", "/etc/hostname")
    assert cat.returncode == 0, cat.stderr
    assert download.content == cat.stdout
    assert len(download.content) == entries["hostname"]["size"] > 0


def test_a_missing_path_is_404_with_the_clis_line(api: Api):
    """Asked by the project's reader: the rule lets any role of the project read its backups' files."""
    reply = _get(api, f"/v1/backups/{api.a.backup_id}/files", api.a.tokens["reader"], path="/etc/no-such-file")
    assert reply.status_code == 404, reply.text
    error = reply.json()["error"]
    cli = _cli(api, "files", api.a.backup_id, "ls", "/etc/no-such-file")
    assert cli.returncode == 2
    assert cli.stderr.decode().strip() == f"stackvault: error: {error['message']} ({error['fix']})"
    assert error["message"].startswith("/etc/no-such-file does not exist in disk ")
    assert error["message"].endswith(f" of backup {api.a.backup_id}")


@pytest.mark.parametrize("resource", ["files", "files/content"])
def test_another_projects_backup_is_404_as_an_unknown_one(api: Api, resource: str):
    unknown = "29991231T235959999Z-ffffff"
    theirs = _get(api, f"/v1/backups/{api.b.backup_id}/{resource}", api.a.tokens["member"], path="/etc/hostname")
    nothing = _get(api, f"/v1/backups/{unknown}/{resource}", api.a.tokens["member"], path="/etc/hostname")
    assert theirs.status_code == nothing.status_code == 404, theirs.text
    assert theirs.json()["error"] == {**nothing.json()["error"],
                                      "message": nothing.json()["error"]["message"].replace(unknown, api.b.backup_id)}


@pytest.fixture(scope="module")
def browser(api: Api) -> Iterator[Browser]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/bootstrap)")
    root = Path(os.environ.get("STACKVAULT_TEST_ARTIFACTS") or REPO / ".state" / "test-artifacts")
    artifacts = root / "dashboard-files"
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    b = Browser(api.url, artifacts)
    yield b
    b.quit()


def test_the_file_browser_in_a_browser(api: Api, browser: Browser):
    browser.log_in(api.a.users["member"], api.password, api.a.name)
    browser.open(f"/dashboard/servers/{api.a.server_id}")
    link = browser.driver.find_element("css selector", "a.browse").get_attribute("href")
    assert link and f"/dashboard/backups/{api.a.backup_id}/files" in link
    browser.open(link.removeprefix(api.url) + "&path=/etc")
    page = browser.text()
    assert "hostname" in page and "devcloud/" in page, page
    browser.capture("files-etc")

    download = browser.driver.find_element("css selector", "tr.entry.file a.download[href*='hostname']")
    cookies = {c["name"]: c["value"] for c in browser.driver.get_cookies()}
    got = requests.get(download.get_attribute("href"), cookies=cookies, timeout=APPLIANCE_S)
    assert got.status_code == 200, got.text
    assert got.headers["Content-Disposition"].startswith("attachment;")
    assert got.content == _cli(api, "files", api.a.backup_id, "cat", "/etc/hostname").stdout

    browser.log_in(api.b.users["member"], api.password, api.b.name)
    browser.open(f"/dashboard/backups/{api.a.backup_id}/files?path=/etc")
    assert "Not Found" in browser.text() and "hostname" not in browser.text()
