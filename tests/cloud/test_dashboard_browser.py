"""The dashboard in a real browser: Debian's headless Chromium, driven through Debian's chromedriver by
Selenium, against `stackvault api` on the dev cloud's real Keystone. A project member logs in, sees
their project's servers only, restores a backup and watches it become ACTIVE; the cloud's admin sees
both projects; a form whose CSRF token was taken out is refused. Every page is saved as a screenshot
at a laptop's 1366x768 and a phone's 390x844, and at the phone's width no page scrolls sideways.

Screenshots go to $STACKVAULT_TEST_ARTIFACTS/dashboard (default: .state/test-artifacts/dashboard).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_api_keystone import Api
from .test_api_keystone import api as api  # a fixture, used by its name

pytestmark = [pytest.mark.devcloud, pytest.mark.slow]  # the API fixture (~1 min), one restore, one browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SIZES = {"laptop": (1366, 768, False), "phone": (390, 844, True)}
REPO = Path(__file__).resolve().parents[2]

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytestmark.append(pytest.mark.skip(reason="needs Debian's chromium and chromium-driver (scripts/bootstrap)"))


@pytest.fixture(scope="module")
def artifacts() -> Path:
    root = Path(os.environ.get("STACKVAULT_TEST_ARTIFACTS") or REPO / ".state" / "test-artifacts") / "dashboard"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


class Browser:
    """One headless Chromium; a fresh profile (no cookies) per login."""

    def __init__(self, base_url: str, artifacts: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1366,768", "--hide-scrollbars", "--lang=en-US"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(120)
        self.base_url = base_url
        self.artifacts = artifacts

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def servers(self) -> set[str]:
        """The names in the overview's table of servers."""
        return {e.text for e in self.driver.find_elements("css selector", "tr.server td:first-child a")}

    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def click_and_wait(self, locator: tuple[str, str], expected: str, deadline_s: float = 60) -> str:
        """Click, then wait for the next page to show `expected` (a click does not wait for navigation)."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.find_element(*locator).click()
        WebDriverWait(self.driver, deadline_s, ignored_exceptions=(NoSuchElementException,
                                                                   StaleElementReferenceException)).until(
            lambda driver: expected in driver.find_element("tag name", "body").text,
            f"no {expected!r} after the click")
        return self.text()

    def log_in(self, user: str, password: str, project: str) -> None:
        self.driver.delete_all_cookies()
        self.open("/dashboard/login")
        for name, value in (("username", user), ("password", password), ("project", project)):
            field = self.driver.find_element("name", name)
            field.clear()
            field.send_keys(value)
        self.click_and_wait(("css selector", "button.primary"), "Log out")

    def _viewport(self, width: int, height: int, mobile: bool) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def capture(self, name: str) -> None:
        """Screenshots of the page as it is, at each size (the whole page's height), and the check
        that the phone's width needs no sideways scrolling."""
        for size, (width, height, mobile) in SIZES.items():
            self._viewport(width, height, mobile)
            overflow = self.driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            if size == "phone":
                assert overflow <= 0, f"{name} scrolls sideways by {overflow} px at {width} px"
            full = self.driver.execute_script("return document.documentElement.scrollHeight")
            self._viewport(width, max(height, min(full, 4000)), mobile)
            self.driver.save_screenshot(str(self.artifacts / f"{name}-{size}-{width}x{height}.png"))
        self._viewport(*SIZES["laptop"])

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture(scope="module")
def browser(api: Api, artifacts: Path) -> Iterator[Browser]:
    b = Browser(api.url, artifacts)
    yield b
    b.quit()


def _wait_for(browser: Browser, element_id: str, wanted: set[str], deadline_s: float) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            seen = browser.driver.find_element("id", element_id).text
        except (NoSuchElementException, StaleElementReferenceException):
            seen = ""
        if seen in wanted:
            return seen
        assert time.monotonic() < deadline, f"#{element_id} still {seen!r} after {deadline_s} s: {browser.text()}"
        time.sleep(1)


def test_the_login_page(browser: Browser):
    browser.open("/dashboard/login")
    assert "Log in" in browser.text()
    browser.capture("login")


def test_a_member_sees_their_project_only_and_restores_a_backup(api: Api, browser: Browser, devcloud):
    admin = devcloud.connect()
    browser.log_in(api.a.users["member"], api.password, api.a.name)
    assert "sv-api-a" in browser.servers() and "sv-api-b" not in browser.servers()
    assert "All projects" not in browser.text()  # a member has no such view
    browser.capture("overview")

    timeline = browser.click_and_wait(("link text", "sv-api-a"), api.a.backup_id)
    assert any(label in timeline for label in ("application (verified)", "application (claimed)", "unknown", "crash"))
    browser.capture("server")

    pages = (("/dashboard/jobs", "jobs", "backup"), ("/dashboard/policies", "policies", "nightly-a"),
             ("/dashboard/usage", "usage", api.a.id))
    for path, name, expected in pages:
        browser.open(path)
        assert expected in browser.text(), browser.text()
        assert api.b.id not in browser.text()
        browser.capture(name)
    browser.open(f"/dashboard/servers/{api.b.server_id}")
    assert "Not Found" in browser.text()  # another project's server, as one that does not exist

    browser.open(f"/dashboard/restore?backup={api.a.backup_id}")
    browser.capture("restore")
    server_name = f"sv-dash-restored-{api.a.id[:6]}"
    browser.driver.find_element("name", "name").send_keys(server_name)
    try:
        browser.click_and_wait(("css selector", "button.primary"), f"Restore of {server_name}")
        assert "/dashboard/restores/" in browser.driver.current_url
        browser.capture("restore-running")
        assert _wait_for(browser, "restore-status", {"active", "failed", "cancelled"}, 600) == "active", browser.text()
        assert browser.driver.find_element("id", "server-status").text == "ACTIVE"
        browser.capture("restore-active")
        restored = [s for s in admin.compute.servers(all_projects=True) if s.name == server_name]
        assert [s.project_id for s in restored] == [api.a.id]
        browser.open("/dashboard/")
        assert server_name in browser.servers()
    finally:
        for server in (s for s in admin.compute.servers(all_projects=True) if s.name == server_name):
            admin.compute.delete_server(server, ignore_missing=True)
            admin.compute.wait_for_delete(server, wait=120)
        for image in admin.image.images(owner=api.a.id):
            if image.name.startswith(server_name):
                admin.image.delete_image(image, ignore_missing=True)


def test_a_form_without_its_csrf_token_is_refused(api: Api, browser: Browser, devcloud):
    browser.log_in(api.b.users["member"], api.password, api.b.name)
    browser.open(f"/dashboard/restore?backup={api.b.backup_id}")
    browser.driver.find_element("name", "name").send_keys("sv-dash-forged")
    browser.driver.execute_script("document.querySelector('main form input[name=csrf_token]').remove()")
    browser.click_and_wait(("css selector", "button.primary"), "Form refused")
    browser.capture("form-refused")
    admin = devcloud.connect()
    assert not [s for s in admin.compute.servers(all_projects=True) if s.name == "sv-dash-forged"]


def test_the_admin_sees_both_projects(api: Api, browser: Browser, devcloud):
    browser.log_in("admin", devcloud.ctx.admin_password, "admin")
    assert {"sv-api-a", "sv-api-b"} <= browser.servers() and "All projects" in browser.text()
    browser.capture("overview-admin")
    browser.open("/dashboard/usage")
    assert api.a.id in browser.text() and api.b.id in browser.text()
    browser.click_and_wait(("link text", "All projects"), "This project")  # to the admin's own project
    browser.open("/dashboard/")
    assert not {"sv-api-a", "sv-api-b"} & browser.servers() and "This project" in browser.text()
