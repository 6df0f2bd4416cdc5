"""A small WSGI layer answering the way Nova's and Neutron's API frameworks do.

Nova-style error bodies (`{"itemNotFound": {"code": 404, "message": ...}}`), microversion
negotiation (`OpenStack-API-Version: compute 2.x` / `X-OpenStack-Nova-API-Version`), request ids,
and the identity keystonemiddleware's auth_token puts in the environ.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import routes
import webob

LOG = logging.getLogger(__name__)

MIN_VERSION = (2, 1)
#: The newest microversion openstacksdk's Server resource asks for; every field up to it is rendered.
MAX_VERSION = (2, 100)

NOVA_FAULT_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
    429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable",
}


class ApiError(Exception):
    """An HTTP error answered with the service's error body; `message` is what Nova would say."""

    def __init__(self, code: int, message: str, neutron_type: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.neutron_type = neutron_type
        self.headers = headers or {}


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestContext:
    """Who is calling (from auth_token's headers) and with which microversion."""

    user_id: str
    project_id: str
    user_name: str
    project_name: str
    roles: list[str]
    token: str
    request_id: str
    version: tuple[int, int] = MIN_VERSION
    host_url: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def at_least(self, version: str) -> bool:
        major, minor = version.split(".")
        return self.version >= (int(major), int(minor))


def version_str(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def parse_version(req: webob.Request) -> tuple[int, int]:
    """The requested compute microversion, as Nova parses it (406 when out of range)."""
    raw = None
    header = req.headers.get("OpenStack-API-Version")
    if header:
        for item in header.split(","):
            parts = item.strip().split(None, 1)
            if len(parts) == 2 and parts[0].lower() == "compute":
                raw = parts[1].strip()
    if raw is None:
        raw = req.headers.get("X-OpenStack-Nova-API-Version")
    if raw is None:
        return MIN_VERSION
    if raw.lower() == "latest":
        return MAX_VERSION
    match = re.fullmatch(r"([1-9]\d*)\.([1-9]\d*|0)", raw.strip())
    if not match:
        raise ApiError(400, f"API Version String {raw} is of invalid format. Must be of format "
                            "MajorNum.MinorNum.")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ApiError(406, f"Version {raw} is not supported by the API. Minimum is "
                            f"{version_str(MIN_VERSION)} and maximum is {version_str(MAX_VERSION)}.")
    return version


Handler = Callable[..., Reply]


class Router:
    """routes.Mapper wrapper: `add('GET', '/servers/{id}', handler)`."""

    def __init__(self) -> None:
        self.mapper = routes.Mapper()
        self.handlers: dict[str, Handler] = {}
        self.paths: set[str] = set()

    def add(self, method: str, path: str, handler: Handler) -> None:
        name = f"r{len(self.handlers)}"
        self.handlers[name] = handler
        self.paths.add(path)
        self.mapper.connect(name, path, handler_name=name, conditions={"method": [method]})

    def resolve(self, path: str, method: str) -> tuple[Handler, dict[str, str]]:
        match = self.mapper.match(path, environ={"REQUEST_METHOD": method})
        if match is None:
            if self.mapper.match(path) is not None or any(
                    self.mapper.match(path, environ={"REQUEST_METHOD": m})
                    for m in ("GET", "POST", "PUT", "DELETE", "PATCH")):
                raise ApiError(405, "The method specified is not allowed for this resource.")
            raise ApiError(404, "The resource could not be found.")
        args = {k: v for k, v in match.items() if k != "handler_name"}
        return self.handlers[match["handler_name"]], args


def json_body(req: webob.Request, required: bool = True) -> dict[str, Any]:
    """The request's JSON object (Nova answers 400 'Malformed request body' otherwise)."""
    if not req.body:
        if required:
            raise ApiError(400, "The server could not comply with the request since it is either "
                                "malformed or otherwise incorrect.")
        return {}
    try:
        data = json.loads(req.body)
    except ValueError:
        raise ApiError(400, "Malformed request body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Malformed request body")
    return data


def context_from_environ(req: webob.Request, version: tuple[int, int]) -> RequestContext:
    """Identity as keystonemiddleware's auth_token left it in the request headers."""
    h = req.headers
    if h.get("X-Identity-Status", "Confirmed") != "Confirmed" or not h.get("X-Project-Id"):
        raise ApiError(401, "The request you have made requires authentication.")
    return RequestContext(
        user_id=h.get("X-User-Id", ""), project_id=h.get("X-Project-Id", ""),
        user_name=h.get("X-User-Name", ""), project_name=h.get("X-Project-Name", ""),
        roles=[r.strip() for r in h.get("X-Roles", "").split(",") if r.strip()],
        token=h.get("X-Auth-Token", ""),
        request_id=req.environ.get("openstack.request_id") or f"req-{uuid.uuid4()}",
        version=version, host_url=req.host_url)


class ApiApp:
    """The authenticated part of one service: route, call the handler, render JSON or an error."""

    def __init__(self, router: Router, *, service: str, prefix: str = "",
                 microversions: bool = False, project_in_path: bool = False):
        self.router = router
        self.service = service
        self.prefix = prefix
        self.microversions = microversions
        self.project_in_path = project_in_path

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        req = webob.Request(environ)
        request_id = environ.setdefault("openstack.request_id", f"req-{uuid.uuid4()}")
        version = MIN_VERSION
        try:
            if self.microversions:
                version = parse_version(req)
            path = req.path_info
            if self.prefix and path.startswith(self.prefix):
                path = path[len(self.prefix):] or "/"
            if self.project_in_path:
                path = re.sub(r"^/[0-9a-f]{32}(?=/|$)", "", path) or "/"
            blank_id = path.endswith("/") and path != "/"  # e.g. DELETE /images/: 404 in Nova
            path = path.rstrip("/") or "/"
            if path.endswith(".json"):
                path = path[:-5]
            try:
                handler, args = self.router.resolve(path, req.method)
            except ApiError as exc:
                if exc.code == 405 and blank_id:
                    raise ApiError(404, "The resource could not be found.") from exc
                raise
            ctx = context_from_environ(req, version)
            reply = handler(ctx, req, **args)
        except ApiError as exc:
            reply = Reply(exc.code, self.error_body(exc), dict(exc.headers))
        except Exception as exc:  # an unexpected failure: answer as Nova does, log the traceback
            LOG.error("unexpected error on %s %s:\n%s", req.method, req.path, traceback.format_exc())
            reply = Reply(500, self.error_body(ApiError(
                500, "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ "
                     f"and attach the Nova API log if possible.\n<class '{type(exc).__name__}'>")))
        return self.respond(reply, request_id, version, start_response)

    def error_body(self, exc: ApiError) -> dict[str, Any]:
        if self.service == "neutron":
            return {"NeutronError": {"type": exc.neutron_type or "HTTPError",
                                     "message": exc.message, "detail": ""}}
        name = NOVA_FAULT_NAMES.get(exc.code, "computeFault")
        return {name: {"code": exc.code, "message": exc.message}}

    def respond(self, reply: Reply, request_id: str, version: tuple[int, int],
                start_response: Callable) -> list[bytes]:
        headers = dict(reply.headers)
        headers["x-openstack-request-id"] = request_id
        if self.microversions:
            headers["x-compute-request-id"] = request_id
            headers["OpenStack-API-Version"] = f"compute {version_str(version)}"
            headers["X-OpenStack-Nova-API-Version"] = version_str(version)
            headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        payload = b""
        if reply.body is not None:
            payload = json.dumps(reply.body).encode()
            headers["Content-Type"] = "application/json"
        elif reply.status not in (204, 304):
            headers.setdefault("Content-Type", "text/html; charset=UTF-8")
        headers["Content-Length"] = str(len(payload))
        status = f"{reply.status} {webob.Response(status=reply.status).status.split(' ', 1)[1]}"
        start_response(status, list(headers.items()))
        return [payload]
