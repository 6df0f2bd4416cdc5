"""A repository in an OpenStack Swift container, through python-swiftclient.

Keys are objects `<prefix><key>` in the container. Swift commits a PUT with a known length all at
once and reads its own writes, so there are no temporary objects and `sync` has nothing to do.

Credentials: tempauth from the `swift` CLI's variables (ST_AUTH, ST_USER, ST_KEY) when they are
set and no cloud is named; otherwise Keystone through openstacksdk (`--os-cloud` / OS_CLOUD and
clouds.yaml, or OS_* variables), whose catalog gives the object-store endpoint. Either way the
result is a storage URL and a token, shared by one swiftclient connection per thread (a
swiftclient Connection holds a single HTTP connection and is not thread-safe); a 401 fetches a
fresh token once. swiftclient's own retries are off: `retry.RetryingBackend` retries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from requests.exceptions import RequestException
from swiftclient import client as swift_client
from swiftclient.exceptions import ClientException

from ..errors import RepositoryError
from .base import Backend, ObjectInfo, TransientError, read_capped


class SwiftBackend(Backend):
    parallel_calls = 8
    def __init__(self, container: str, prefix: str = "", *, cloud: str | None = None,
                 timeout: float = 60) -> None:
        self.container = container
        self.prefix = prefix
        self.location = f"swift://{container}/{prefix}".rstrip("/")
        self.timeout = timeout
        self.page_size = 10000  # names per listing request (Swift's default maximum)
        use_tempauth = cloud is None and os.environ.get("ST_AUTH")
        self._authenticate: Callable[[], tuple[str, str]] = (
            _tempauth if use_tempauth else _keystone(cloud))
        self.auth_kind = "tempauth" if use_tempauth else "keystone"
        self._lock = threading.Lock()
        self._credentials: tuple[str, str] | None = None  # (storage URL, token)
        self._generation = 0  # bumped when the token is renewed: threads reconnect
        self._local = threading.local()

    @property
    def identity(self) -> str:
        """The storage URL names the Swift endpoint and the account (the cloud's project) the
        container is in; it is known once authenticated."""
        return f"{self.location} at {self._connection().url}"

    # ---- connections -------------------------------------------------------------------------
    def _connection(self) -> swift_client.Connection:
        with self._lock:
            if self._credentials is None:
                self._credentials = self._guarded_auth()
            url, token = self._credentials
            generation = self._generation
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.generation != generation:
            conn = swift_client.Connection(preauthurl=url, preauthtoken=token, retries=0,
                                           timeout=self.timeout)
            self._local.conn, self._local.generation = conn, generation
        return conn

    def _guarded_auth(self) -> tuple[str, str]:
        try:
            return self._authenticate()
        except ClientException as exc:
            if exc.http_status and exc.http_status >= 500:
                raise TransientError(f"Swift authentication for {self.location} failed: "
                                     f"{exc.http_status} {exc.http_reason}",
                                     "the store is unwell; try again later") from None
            raise RepositoryError(f"Swift authentication for {self.location} at "
                                  f"{os.environ.get('ST_AUTH')} failed: {exc.http_status} "
                                  f"{exc.http_reason}", "check ST_AUTH, ST_USER and ST_KEY") from None
        except (OSError, RequestException) as exc:
            raise TransientError(f"cannot reach the Swift auth endpoint for {self.location}: "
                                 f"{_first_line(exc)}", "check ST_AUTH and that Swift runs") from None

    def _renew(self, stale: tuple[str, str] | None) -> None:
        with self._lock:
            if self._credentials == stale:  # another thread may have renewed it already
                self._credentials = self._guarded_auth()
                self._generation += 1

    def _call(self, key: str, fn: Callable[[swift_client.Connection], Any], *,
              missing: Callable[[], Any] | None = None) -> Any:
        """Run `fn` on this thread's connection; a 401 renews the token and tries once more."""
        for renewed in (False, True):
            conn = self._connection()
            stale = self._credentials
            with self._translate(key, conn):
                try:
                    return fn(conn)
                except ClientException as exc:
                    if exc.http_status == 401 and not renewed:
                        self._renew(stale)
                        continue
                    if exc.http_status == 404 and missing is not None:
                        return missing()
                    raise
        raise AssertionError("unreachable")

    # ---- the interface ---------------------------------------------------------------------------
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        body = bytes(data)
        self._call(key, lambda c: c.put_object(self.container, self.prefix + key, body,
                                               content_length=len(body)))

    def get(self, key: str, max_size: int | None = None) -> bytes:
        def gone() -> bytes:
            raise KeyError(key)

        def read(c: swift_client.Connection) -> bytes:
            if max_size is None:
                return c.get_object(self.container, self.prefix + key)[1]
            headers, body = c.get_object(self.container, self.prefix + key, resp_chunk_size=1 << 20)
            try:
                return read_capped(body.read, key, max_size, int(headers.get("content-length", 0)))
            finally:
                body.close()

        return self._call(key, read, missing=gone)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        def gone() -> bytes:
            raise KeyError(key)

        if length <= 0:
            return b""
        wanted = {"Range": f"bytes={offset}-{offset + length - 1}"}
        return self._call(key, lambda c: c.get_object(self.container, self.prefix + key, headers=wanted)[1][:length],
                          missing=gone)

    def exists(self, key: str) -> bool:
        return self._call(key, lambda c: c.head_object(self.container, self.prefix + key) is not None,
                          missing=lambda: False)

    def delete(self, key: str) -> None:
        self._call(key, lambda c: c.delete_object(self.container, self.prefix + key),
                   missing=lambda: None)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        marker = ""
        while True:
            _, objects = self._call(prefix, lambda c: c.get_container(
                self.container, prefix=self.prefix + prefix, marker=marker, limit=self.page_size))  # noqa: B023 - called in this iteration
            if not objects:
                return
            for obj in objects:
                yield ObjectInfo(obj["name"][len(self.prefix):], int(obj["bytes"]),
                                 _timestamp(obj["last_modified"]))
            marker = objects[-1]["name"]

    def create(self) -> None:
        self._call("", lambda c: c.put_container(self.container))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    # ---- errors a user can act on ----------------------------------------------------------------
    @contextmanager
    def _translate(self, key: str, conn: swift_client.Connection) -> Iterator[None]:
        where = f"{self.location} at {conn.url}"
        try:
            yield
        except ClientException as exc:
            status = exc.http_status or 0
            if status == 404:
                raise RepositoryError(f"Swift container {self.container!r} does not exist at "
                                      f"{conn.url}", "run `stackvault init` to create it, or fix "
                                      "the container name or the account") from None
            if status in (401, 403):
                fix = ("check ST_USER / ST_KEY" if self.auth_kind == "tempauth" else
                       "check the user's role on the project in clouds.yaml (--os-cloud)")
                raise RepositoryError(f"Swift refused access to {where}: {status} "
                                      f"{exc.http_reason}", fix) from None
            if status >= 500 or status in (408, 429) or not status:
                raise TransientError(f"Swift failed on {key or 'the container'} in {where}: "
                                     f"{status} {exc.http_reason or _first_line(exc)}",
                                     "the store is unwell; try again later") from None
            raise RepositoryError(f"Swift failed on {key or 'the container'} in {where}: "
                                  f"{status} {exc.http_reason}", "see the Swift proxy's log") from None
        except (OSError, RequestException) as exc:
            raise TransientError(f"cannot reach Swift at {conn.url} for {self.location}: "
                                 f"{_first_line(exc)}", "check the endpoint and that Swift runs"
                                 ) from None


def _tempauth() -> tuple[str, str]:
    """Storage URL and token from ST_AUTH / ST_USER / ST_KEY (tempauth, auth v1)."""
    url, token = swift_client.get_auth(os.environ["ST_AUTH"], os.environ.get("ST_USER", ""),
                                       os.environ.get("ST_KEY", ""), auth_version="1")
    return url, token


def _keystone(cloud: str | None) -> Callable[[], tuple[str, str]]:
    """Storage URL (the catalog's object-store endpoint) and a token, through openstacksdk."""
    holder: dict[str, Any] = {}

    def authenticate() -> tuple[str, str]:
        from ..cloud.connection import connect

        conn = holder.get("conn")
        if conn is None:
            conn = holder["conn"] = connect(cloud)
        else:
            conn.session.invalidate()  # we were told the token is no good
        try:
            url = conn.object_store.get_endpoint()
        except Exception as exc:  # noqa: BLE001 - openstacksdk raises several kinds here
            raise RepositoryError(f"cloud {cloud or '(OS_* environment)'} has no object-store "
                                  f"endpoint: {_first_line(exc)}",
                                  "ask the operator for Swift, or use s3://") from None
        token = conn.session.get_token()
        assert url is not None and token is not None  # the sdk raises when it has no endpoint or token
        return url.rstrip("/"), token

    return authenticate


def _timestamp(text: str) -> float:
    """Swift listings give `2026-12-01T03:56:20.123450` (UTC, no zone)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
