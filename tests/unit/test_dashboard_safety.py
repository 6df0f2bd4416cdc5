"""The dashboard without a cloud: what a browser gets before any login. The session cookie holds a
random id only (HttpOnly, SameSite=Lax, Secure behind a TLS proxy), a form without the session's CSRF
token is refused, every page but the login sends a visitor to it, and the assets are the package's."""

from __future__ import annotations

import re

import pytest


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the form carries no CSRF token"
    return found.group(1)


def test_the_login_page_sets_a_random_session_cookie_only(client):
    reply = client.get("/dashboard/login")
    assert reply.status_code == 200
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith("stackvault_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    value = cookie.split(";")[0].split("=", 1)[1]
    assert len(value) >= 40 and value != _csrf(reply.text)
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["X-Frame-Options"] == "DENY"


def test_behind_a_tls_proxy_the_cookie_is_secure(client):
    reply = client.get("/dashboard/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in reply.headers["Set-Cookie"]


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/jobs", "/dashboard/restore", "/dashboard/usage"])
def test_a_page_without_a_session_sends_to_the_login(client, path):
    reply = client.get(path)
    assert reply.status_code == 302
    assert reply.headers["Location"].startswith("/dashboard/login?next=")


def test_a_form_without_the_sessions_csrf_token_is_refused(client):
    page = client.get("/dashboard/login")
    token = _csrf(page.text)
    for form in ({}, {"csrf_token": "forged"}, {"csrf_token": token + "x"}):
        reply = client.post("/dashboard/login", data={**form, "username": "u", "password": "p", "project": "x"})
        assert reply.status_code == 400
        assert "Form refused" in reply.text
    client.delete_cookie("stackvault_session", path="/dashboard")
    assert client.post("/dashboard/login", data={"csrf_token": token}).status_code == 400  # another session's


def test_the_stylesheet_is_served_from_the_package(client):
    page = client.get("/dashboard/login").text
    assets = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert assets and all(url.startswith("/dashboard/") for url in assets), assets
    css = client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and "@media (max-width: 640px)" in css.text


def test_a_session_whose_token_keystone_no_longer_takes_gets_the_expired_page(client):
    """Here no keystonemiddleware confirms the session's token, as when Keystone refuses it (expired or
    revoked): the page says so, and the session is gone (the next page asks for a login)."""
    sessions = client.application.extensions["stackvault.dashboard"]
    session = sessions.log_in(sessions.new(), "gAAAAA-a-token-keystone-refuses", "alice", "project-a", "")
    client.set_cookie("stackvault_session", session.id, path="/dashboard")
    reply = client.get("/dashboard/jobs")
    assert reply.status_code == 401
    assert "Your session has expired" in reply.text and "gAAAAA" not in reply.text
    assert client.get("/dashboard/jobs").status_code == 302


def test_a_logged_in_session_gets_a_new_id(client):
    sessions = client.application.extensions["stackvault.dashboard"]
    before = sessions.new()
    after = sessions.log_in(before, "gAAAAA-token", "alice", "project-a", "")
    assert after.id != before.id and after.csrf != before.csrf
    assert sessions.get(before.id) is None and sessions.get(after.id) is after
