"""/v1/policies: the policies that back up the caller's project, and (admins) the writing of policies.

A policy is either the config's (`[policy.NAME]` in the config of `stackvault server`, changed there)
or written through this API and kept in the catalog, which every proxy's `stackvault server` reads
again every few seconds (docs/service.md). A written policy takes the keys of a `[policy.NAME]` table,
read by the config's own parser, and names the `project` it backs up. A policy of another project is
answered as one that does not exist.
"""

from __future__ import annotations

from dataclasses import asdict
from http import HTTPStatus

from flask import Blueprint, Response, jsonify, request

from ..catalog.policies import POLICY_NAME
from ..config import PROXY_POLICY_KEYS, Policy, parse_policy
from ..errors import NotFoundError, UsageError
from .faults import ApiError
from .scope import Scope, caller, json_object, scope, service

blueprint = Blueprint("policies", __name__)

#: Where a written policy's errors say it is.
BODY = "the request body"


def _shown(policy: Policy, project_id: str, source: str) -> dict:
    """What a project's user may read of a policy: what it selects, when, how, how long it keeps.
    The clouds.yaml entry it connects with is the proxy's business."""
    return {"name": policy.name, "project_id": project_id, "source": source, "enabled": policy.enabled,
            "schedule": policy.schedule, "timezone": policy.timezone, "level": policy.level,
            "full_on": policy.full_on, "full_every_days": policy.full_every_days,
            "servers": policy.servers, "server_tags": policy.server_tags, "server_metadata": policy.server_metadata,
            "all": policy.all, "exclude": policy.exclude, "volumes": policy.volumes,
            "availability_zones": policy.availability_zones, "retention": asdict(policy.retention),
            "require_consistency": policy.require_consistency or service().settings.cloud.require_consistency}


@blueprint.route("/v1/policies", methods=["GET", "POST"])
def policies():
    """The policies that back up servers or volumes of the caller's project; a new one (admins).
    ---
    get:
      summary: List policies
      parameters:
      - {in: query, name: project_id, schema: {type: string}, description: another project (admin)}
      - {in: query, name: all_projects, schema: {type: boolean}, description: every policy (admin)}
      responses:
        200: {description: "{policies: [{name, project_id, source, enabled, schedule, level, servers, ...}]}"}
    post:
      summary: Write a policy (kept in the catalog; every `stackvault server` runs it without a restart)
      requestBody:
        content:
          application/json:
            schema:
              type: object
              required: [name, project]
              description: the keys of a `[policy.NAME]` table of the config (docs/service.md), and its name
              properties:
                name: {type: string, description: "letters, digits, `_`, `.`, `-`; up to 100"}
                project: {type: string, description: the id of the project whose servers and volumes it backs up}
                schedule: {type: string, description: a cron expression}
                servers: {type: array, items: {type: string}}
                retention: {type: object}
      responses:
        201: {description: "{policy: {name, project_id, source: catalog, ...}} as GET /v1/policies/{name} shows it"}
        400: {description: a body the config's parser refuses (its message and fix), or no project}
        403: {description: the rules refuse the caller (not an admin)}
        409: {description: a policy of that name exists (the config's, or written before)}
    """
    if request.method == "POST":
        return _create()
    return jsonify({"policies": policy_list(scope("stackvault:policy:list"))})


@blueprint.route("/v1/policies/<name>", methods=["GET", "PUT", "DELETE"])
def one_policy(name: str):
    """One policy backing up the caller's project; replaced or deleted (admins, written policies only).
    ---
    get:
      summary: Show a policy
      parameters:
      - {in: path, name: name, required: true, schema: {type: string}}
      responses:
        200: {description: "{policy: {name, project_id, source, enabled, schedule, level, servers, retention, ...}}"}
        404: {description: no such policy backing up the caller's project (another project's is not told apart)}
    put:
      summary: Replace a policy written through the API
      parameters:
      - {in: path, name: name, required: true, schema: {type: string}}
      requestBody:
        content:
          application/json:
            schema: {type: object, required: [project], description: "the policy's keys, as for POST /v1/policies"}
      responses:
        200: {description: "{policy: {...}} as GET shows it"}
        400: {description: a body the config's parser refuses (its message and fix), or no project}
        403: {description: the rules refuse the caller (not an admin)}
        404: {description: no such policy backing up the caller's project}
        409: {description: the policy is the config's (changed in the config of `stackvault server`)}
    delete:
      summary: Delete a policy written through the API (its backups and runs stay)
      parameters:
      - {in: path, name: name, required: true, schema: {type: string}}
      responses:
        204: {description: deleted}
        403: {description: the rules refuse the caller (not an admin)}
        404: {description: no such policy backing up the caller's project}
        409: {description: the policy is the config's (changed in the config of `stackvault server`)}
    """
    if request.method == "GET":
        policy, project = _visible(name)
        return jsonify({"policy": _shown(policy, project, _source(name))})
    rule = "stackvault:policy:delete" if request.method == "DELETE" else "stackvault:policy:update"
    if name in service().settings.policies:
        _require(rule, _visible(name)[1])  # another project's config policy: 404, as one that does not exist
        raise _written_in_config(name)
    _require(rule, _stored_project(name))
    if request.method == "DELETE":
        if not service().stored_policies().remove(name):
            raise _no_policy(name)
        service().end_policy_runs(name, f"policy {name} was deleted through the API while this run was unfinished")
        return Response(status=HTTPStatus.NO_CONTENT)
    keys = _keys(name)
    _require("stackvault:policy:update", keys["project"])  # moved to another project: allowed there too
    policy = _parsed(name, keys)
    if not service().stored_policies().replace(name, keys):
        raise _no_policy(name)
    return jsonify({"policy": _shown(policy, keys["project"], "catalog")})


def policy_list(within: Scope) -> list[dict]:
    """The policies in force that back up a project `within` covers."""
    svc = service()
    projects = {policy.name: svc.policy_project(policy) for policy in svc.policies()}
    return [_shown(p, projects[p.name], _source(p.name)) for p in svc.policies() if within.covers(projects[p.name])]


def _create():
    # the rule first, for the caller's own project: a project-scoped body is parsed only for one who
    # may create policies at all (an admin), then the rule again for the project it names
    _require("stackvault:policy:create", caller().project_id)
    project = json_object().get("project")
    _require("stackvault:policy:create", project if isinstance(project, str) and project else caller().project_id)
    name = json_object().get("name")
    if not isinstance(name, str) or not POLICY_NAME.fullmatch(name):
        raise UsageError(f"bad policy name {name!r} in {BODY}",
                         "give `name`: letters, digits, `_`, `.` and `-`, up to 100, beginning with a letter or digit")
    if name in service().settings.policies:
        raise _written_in_config(name)
    keys = _keys(name)
    policy = _parsed(name, keys)
    if not service().stored_policies().add(name, keys):
        raise ApiError(HTTPStatus.CONFLICT, f"policy {name!r} exists",
                       f"replace it with PUT /v1/policies/{name}, or choose another name")
    response = jsonify({"policy": _shown(policy, keys["project"], "catalog")})
    response.headers["Location"] = f"/v1/policies/{name}"
    return response, HTTPStatus.CREATED


def _keys(name: str) -> dict:
    """The request's policy keys (its `name`, when given, is the policy's): a `[policy.NAME]` table's."""
    body = json_object()
    if body.get("name", name) != name:
        raise UsageError(f"{BODY} names policy {body['name']!r}, the path {name!r}", "a policy keeps its name: "
                         "write a new one with POST /v1/policies and delete this one")
    keys = {key: value for key, value in body.items() if key != "name"}
    proxy_keys = [key for key in PROXY_POLICY_KEYS if key in keys]
    if proxy_keys:
        raise UsageError(f"policy {name!r} in {BODY} sets {', '.join(proxy_keys)}, the proxy's own credentials "
                         "or stores", f"leave {', '.join(proxy_keys)} out: a policy written through the API backs "
                         "up with the clouds.yaml entry of `stackvault server`'s config, into its repository; a "
                         "policy of another cloud, or one copied to a second site, is written there")
    if not isinstance(keys.get("project"), str) or not keys["project"]:
        raise UsageError(f"policy {name!r} in {BODY} names no project",
                         "give `project`: the id of the project whose servers and volumes it backs up")
    return keys




def _parsed(name: str, keys: dict) -> Policy:
    """The policy as the config's parser reads the same table (its message, a 400, when it refuses it)."""
    return parse_policy(name, keys, BODY)


def _source(name: str) -> str:
    return "catalog" if name in service().policies_in_force().stored else "config"


def _visible(name: str) -> tuple[Policy, str]:
    """A policy in force that the caller may read, with its project; else 404, whether it does not exist
    or backs up another project."""
    svc, who = service(), caller()
    policy = next((p for p in svc.policies() if p.name == name), None)
    if policy is None:
        raise _no_policy(name)
    project = svc.policy_project(policy)
    if not svc.rules.allows("stackvault:policy:list", who, project):
        raise _no_policy(name)
    return policy, project


def _stored_project(name: str) -> str:
    """The project of a policy kept in the catalog (in force or not: a stored one that no longer parses
    is replaced or deleted all the same), when the caller may read it; else 404."""
    keys = service().stored_policies().get(name)
    project = (keys or {}).get("project")
    if not isinstance(project, str) or not service().rules.allows("stackvault:policy:list", caller(), project):
        raise _no_policy(name)
    return project


def _require(rule: str, project: str) -> None:
    if not service().rules.allows(rule, caller(), project):
        raise ApiError(HTTPStatus.FORBIDDEN, f"{rule} is not allowed for your roles in project {project}",
                       "ask an admin of the cloud to write the policy")


def _no_policy(name: str) -> NotFoundError:
    return NotFoundError(f"no policy {name!r} backs up project {caller().project_id}",
                         "list the policies that do with GET /v1/policies")


def _written_in_config(name: str) -> ApiError:
    return ApiError(HTTPStatus.CONFLICT, f"policy {name!r} is written in the config of `stackvault server`, "
                    "not through the API", "change it in that config and reload the server (SIGHUP), or write a "
                    "policy of another name with POST /v1/policies")
