"""Which project a request is about, and the catalog's backups that project may see.

A request is about the caller's own project; `?project_id=` another one, or `?all_projects=1` every
one, needs the `stackvault:all_projects` rule. A backup belongs to the project of the server it is
of (its record's source); a backup of a volume or of a disk names no project and is seen with
`all_projects` only. Another project's backup is reported exactly as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from flask import current_app, request

from ..catalog.models import BackupRow
from ..errors import UsageError
from .access import Caller
from .faults import ApiError
from .service import ApiService


@dataclass(frozen=True)
class Scope:
    caller: Caller
    project_id: str | None  # None: every project

    def covers(self, project_id: str | None) -> bool:
        return self.project_id is None or project_id == self.project_id


def service() -> ApiService:
    return current_app.extensions["stackvault"]


def caller() -> Caller:
    return Caller.from_environ(request.environ)


def json_object(*, required: bool = True) -> dict:
    """The request's JSON body, which must be one object (`{}` for no body when not `required`): a
    list or a string in its place is a 400 naming it, never a 500."""
    body = request.get_json(silent=True)
    if body is None and not required and not request.get_data(cache=True):
        return {}
    if not isinstance(body, dict):
        raise UsageError("the request body is not a JSON object", "send the keys as one object, with "
                         "Content-Type: application/json")
    return body


def asks_all_projects() -> bool:
    return request.args.get("all_projects", "").lower() in ("1", "true", "yes")


def scope(rule: str, *, every: bool | None = None) -> Scope:
    """The project this request is about, once `rule` allows the caller on it (else 403). `every`
    overrides `?all_projects=` (the dashboard's own choice of view)."""
    who, rules = caller(), service().rules
    every = asks_all_projects() if every is None else every
    project = request.args.get("project_id") or who.project_id
    if (every or project != who.project_id) and not rules.allows("stackvault:all_projects", who, project):
        raise ApiError(HTTPStatus.FORBIDDEN, f"only an admin may see {'every project' if every else 'another project'}",
                       "ask about your own project: leave out all_projects and project_id")
    if not rules.allows(rule, who, project):
        raise ApiError(HTTPStatus.FORBIDDEN, f"{rule} is not allowed for your roles in project {project}",
                       "ask an admin of the cloud for a role in the project")
    return Scope(who, None if every else project)


def project_of(source: dict | None) -> str | None:
    """The project a backup belongs to: its server's or its volume's, as stored with the backup (a volume
    backed up before volumes carried theirs belongs to no project: only an admin sees it)."""
    source = source or {}
    return (source.get("server") or source.get("volume") or {}).get("project_id")


def volume_of(source: dict | None) -> dict | None:
    """{"id", "name"} of the volume a backup is of, None for a server's or a disk's."""
    volume = (source or {}).get("volume") or {}
    return {"id": volume["id"], "name": volume.get("name") or ""} if volume.get("id") else None


def server_of(source: dict | None) -> dict | None:
    """{"id", "name"} of the server a backup is of, None for a volume's or a disk's."""
    server = (source or {}).get("server") or {}
    return {"id": server["id"], "name": server.get("name") or ""} if server.get("id") else None


def visible_backups(within: Scope) -> list[BackupRow]:
    """The catalog's backups of the repository that `within` covers, oldest first."""
    ctx = service().context()
    return [row for row in ctx.catalog.backups(ctx.repo.id) if within.covers(project_of(row.source))]


def newest_backups(within: Scope, identify: Callable[[dict | None], dict | None]) -> dict[str, dict]:
    """Per server or volume id (`identify`: server_of or volume_of), its newest backup `within` covers:
    {backup_id, created, level, status, consistency}."""
    newest: dict[str, dict] = {}
    for row in visible_backups(within):  # oldest first: the last one seen is the newest
        item = identify(row.source)
        if item:
            newest[item["id"]] = {"backup_id": row.backup_id, "created": row.created, "level": row.level,
                                  "status": row.status, "consistency": row.consistency}
    return newest


def cross_project(within: Scope) -> dict:
    """The facade's listing arguments for `within`: the caller's own project, or (an admin asking about
    others) every project (`project_id` None) or one other project."""
    other = within.project_id != within.caller.project_id
    return {"all_projects": other, "project_id": within.project_id if other else None}
