"""A minimal JSON-over-HTTP client (stdlib only) for `up` to configure Keystone and Glance.

The devcloud CLI runs in stackvault's virtualenv, which has no OpenStack client libraries; the few
calls `up` and `status` make do not justify them.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import IO, Any

from devcloud.context import DevcloudError

CHUNK = 1 << 20


class ApiError(DevcloudError):
    def __init__(self, method: str, url: str, status: int, body: str):
        super().__init__(f"{method} {url} answered {status}: {body[:300]}")
        self.status = status


def request(method: str, url: str, *, token: str | None = None, body: Any = None,
            headers: dict[str, str] | None = None, stream: IO[bytes] | None = None,
            length: int | None = None, timeout: float = 120) -> tuple[int, dict[str, str], Any]:
    """Send one request; JSON bodies both ways, or `stream` (a file) as a raw upload.

    Returns (status, headers lower-cased, parsed JSON or raw bytes). Raises ApiError on >= 400.
    """
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout,
                                      blocksize=CHUNK)
    hdrs = {"Accept": "application/json", **(headers or {})}
    if token:
        hdrs["X-Auth-Token"] = token
    payload: Any = None
    if stream is not None:
        hdrs.setdefault("Content-Type", "application/octet-stream")
        if length is not None:
            hdrs["Content-Length"] = str(length)
        payload = stream
    elif body is not None:
        payload = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, path or "/", body=payload, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as exc:
        raise DevcloudError(f"{method} {url} failed: {exc}") from exc
    finally:
        conn.close()
    resp_headers = {k.lower(): v for k, v in resp.getheaders()}
    if resp.status >= 400:
        raise ApiError(method, url, resp.status, raw.decode(errors="replace"))
    data: Any = raw
    if raw and resp_headers.get("content-type", "").startswith("application/json"):
        data = json.loads(raw)
    return resp.status, resp_headers, data


def password_token(auth_url: str, user: str, password: str, project: str,
                   domain: str = "Default") -> tuple[str, dict]:
    """A project-scoped token from Keystone; returns (token, token body)."""
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password, "domain": {"name": domain}}}},
        "scope": {"project": {"name": project, "domain": {"name": domain}}},
    }}
    _, headers, data = request("POST", f"{auth_url}/auth/tokens", body=body)
    return headers["x-subject-token"], data["token"]
