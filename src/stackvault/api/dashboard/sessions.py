"""Dashboard sessions: the Keystone token stays in the API process, the browser holds a random id.

A session is made on the first visit (so that the login form, too, carries a CSRF token) and gets a
new id when its user logs in (a session id planted before the login is worth nothing after it).
`SessionTokens` sits in front of keystonemiddleware: for /dashboard requests it replaces any
X-Auth-Token header by the token of the cookie's session, so the dashboard's requests are validated
by Keystone exactly as the API's are, and an expired or revoked token shows as one.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from werkzeug.http import parse_cookie

from ... import logs

COOKIE = "stackvault_session"
#: A session unused this long is forgotten (its token too), whatever the token's own expiry.
IDLE_S = 8 * 3600
#: A session that never logged in (a visit to the login page) is forgotten sooner: anyone can make one.
ANONYMOUS_IDLE_S = 900
#: The WSGI environ key the session of a request is put under.
ENVIRON_KEY = "stackvault.dashboard.session"
PREFIX = "/dashboard"


@dataclass
class DashboardSession:
    id: str
    csrf: str
    seen: float = field(default_factory=time.monotonic)
    token: str | None = None
    user_name: str = ""
    project_name: str = ""
    expires: str = ""  # the token's expiry, ISO time, as Keystone gave it
    all_projects: bool | None = None  # the view an admin chose; None: the default (every project)

    @property
    def logged_in(self) -> bool:
        return self.token is not None

    def idle(self, now: float, logged_in_s: float) -> bool:
        return now - self.seen > (logged_in_s if self.logged_in else min(logged_in_s, ANONYMOUS_IDLE_S))

    def csrf_matches(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given or "", self.csrf)


class SessionStore:
    """The sessions of one API process, in memory (a WSGI server with several processes needs the
    dashboard's requests kept on one process: docs/dashboard.md)."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self._idle_s = idle_s
        self._sessions: dict[str, DashboardSession] = {}
        self._lock = threading.Lock()

    def new(self) -> DashboardSession:
        session = DashboardSession(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        with self._lock:
            self._forget_idle()
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> DashboardSession | None:
        with self._lock:
            session = self._sessions.get(session_id or "")
            if session is None or session.idle(time.monotonic(), self._idle_s):
                self._sessions.pop(session_id or "", None)
                return None
            session.seen = time.monotonic()
            return session

    def log_in(self, old: DashboardSession, token: str, user_name: str, project_name: str,
               expires: str) -> DashboardSession:
        """A new session (new id, new CSRF token) holding the token; the anonymous one is dropped."""
        logs.keep_secret(token)
        session = self.new()
        session.token, session.expires = token, expires
        session.user_name, session.project_name = user_name, project_name
        self.drop(old.id)
        return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for sid in [sid for sid, s in self._sessions.items() if s.idle(now, self._idle_s)]:
            del self._sessions[sid]


class SessionTokens:
    """WSGI middleware, outside keystonemiddleware: a dashboard request carries its session's token."""

    def __init__(self, app, store: SessionStore) -> None:
        self.app = app
        self.sessions = store

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(PREFIX):
            environ.pop("HTTP_X_AUTH_TOKEN", None)
            session = self.sessions.get(parse_cookie(environ).get(COOKIE))
            environ[ENVIRON_KEY] = session
            if session is not None and session.token:
                environ["HTTP_X_AUTH_TOKEN"] = session.token
        return self.app(environ, start_response)
