"""/v1/servers: a project's servers with their protection status and last backup.

The servers are listed from Nova with the caller's own token, so the cloud itself decides what the
caller may see; the service adds which policies select each server and its newest backup.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from types import SimpleNamespace

from flask import Blueprint, jsonify

from ..cloud.inventory import Selection, selects
from ..cloud.servers import find_server, set_server_metadata, visible_servers
from ..domain import BackupLevel
from ..errors import NotFoundError, StackvaultError, UsageError
from ..service.policy_run import policy_selection
from .access import Caller
from .faults import ApiError
from .scope import Scope, cross_project, json_object, newest_backups, scope, server_of, service

blueprint = Blueprint("servers", __name__)
log = logging.getLogger("stackvault.api")


def caller_connection(who: Caller):
    """openstacksdk on the caller's token, scoped to the caller's project, in the service's region."""
    import openstack

    auth = service().service_auth
    return openstack.connect(auth_type="v3token", auth_url=auth["auth_url"], token=who.token,
                             project_id=who.project_id, region_name=auth.get("region_name"),
                             interface=auth.get("interface") or "public", load_yaml_config=False,
                             load_envvars=False)


def _protecting(server) -> list[str]:
    """The enabled policies whose selection takes `server`."""
    svc = service()
    names = []
    for policy in svc.policies():
        if not policy.enabled or server.project_id != svc.policy_project(policy):
            continue
        if selects(policy_selection(policy), server):
            names.append(policy.name)
    return names


def _servers(within: Scope) -> list:
    return visible_servers(caller_connection(within.caller), **cross_project(within))


@blueprint.get("/v1/servers")
def list_servers():
    """The caller's servers, each with the policies protecting it and its newest backup.
    ---
    get:
      summary: List servers with their protection status
      parameters:
      - {in: query, name: project_id, schema: {type: string}, description: another project (admin)}
      - {in: query, name: all_projects, schema: {type: boolean}, description: every project (admin)}
      responses:
        200: {description: "{servers: [{id, name, status, project_id, protected, policies, last_backup}]}"}
    """
    return jsonify({"servers": server_list(scope("stackvault:server:list"))})


def server_list(within: Scope) -> list[dict]:
    """The servers `within` covers (from Nova, with the caller's token), with protection and newest backup."""
    newest = newest_backups(within, server_of)
    out = []
    for server in _servers(within):
        policies = _protecting(server)
        out.append({"id": server.id, "name": server.name, "status": server.status, "project_id": server.project_id,
                    "protected": bool(policies), "policies": policies, "last_backup": newest.get(server.id)})
    return out


def _own_server(within: Scope, server_id: str, conn=None):  # an openstacksdk server
    """The caller's server: Nova, on the caller's own token, says whether it is theirs (another project's
    is not found, exactly as one that does not exist)."""
    conn = conn or caller_connection(within.caller)
    server = find_server(conn, server_id, all_projects=cross_project(within)["all_projects"])
    if server is None or not within.covers(server.project_id):
        raise NotFoundError(f"no server {server_id!r} in project {within.caller.project_id}",
                            "list your servers with GET /v1/servers")
    return server


@blueprint.put("/v1/servers/<server_id>/policies/<name>")
def opt_in(server_id: str, name: str):
    """Opt one of the caller's servers into a policy that selects servers by metadata: the policy's
    `server_metadata` pairs are set on the server, with the caller's own token.
    ---
    put:
      summary: Opt a server into a policy
      parameters:
      - {in: path, name: server_id, required: true, schema: {type: string}}
      - {in: path, name: name, required: true, schema: {type: string}, description: the policy's name}
      responses:
        200: {description: "{server: {id, name, protected, policies, metadata}}"}
        403: {description: the rules refuse the caller (a reader)}
        404: {description: no such server, or no such policy backing up the caller's project}
        409: {description: the policy does not select servers by metadata alone (an admin adds the server)}
    """
    within = scope("stackvault:server:protect")
    svc = service()
    policy = next((p for p in svc.policies() if p.name == name and p.enabled
                   and within.covers(svc.policy_project(p))), None)
    if policy is None:
        raise NotFoundError(f"no enabled policy {name!r} backs up project {within.caller.project_id}",
                            "list the policies that do with GET /v1/policies")
    conn = caller_connection(within.caller)
    server = _own_server(within, server_id, conn)
    opted = SimpleNamespace(id=server.id, name=server.name, tags=getattr(server, "tags", None) or [],
                            availability_zone=server.availability_zone,
                            metadata={**(server.metadata or {}), **policy.server_metadata})
    if not policy.server_metadata or not selects(policy_selection(policy), opted):
        raise ApiError(HTTPStatus.CONFLICT, f"policy {name} does not select servers by metadata alone",
                       "ask an admin to add the server to the policy's servers, tags or exclude list")
    server = set_server_metadata(conn, server.id, policy.server_metadata)
    return jsonify({"server": {"id": server.id, "name": server.name, "protected": bool(_protecting(server)),
                               "policies": _protecting(server), "metadata": dict(server.metadata or {})}})


@blueprint.post("/v1/servers/<server_id>/backups")
def back_up_server(server_id: str):
    """Start a backup of one of the caller's servers; it runs as `stackvault backup --server` does.
    ---
    post:
      summary: Start a backup of a server
      parameters:
      - {in: path, name: server_id, required: true, schema: {type: string}}
      requestBody:
        content:
          application/json:
            schema: {type: object, properties: {level: {type: string, enum: [full, incremental, differential]}}}
      responses:
        202: {description: "{backup: {server_id, level}}: started; /v1/servers shows its last_backup when done"}
        403: {description: the rules refuse the caller (a reader)}
        404: {description: no such server in the caller's project (another project's is not told apart)}
    """
    from ..cloud.connection import connect
    from ..jobs.cloud_backup import back_up_cloud

    within = scope("stackvault:server:backup")
    body = json_object(required=False)
    try:
        level = BackupLevel(body.get("level", BackupLevel.INCREMENTAL))
    except ValueError:
        raise UsageError(f"level {body.get('level')!r} is not a backup level",
                         f"give one of {', '.join(BackupLevel)}") from None
    server = _own_server(within, server_id)
    svc = service()
    ctx = svc.context()
    selection = Selection(servers=[server.id], project=server.project_id)

    def run() -> None:  # the job records itself in the catalog, as from the CLI
        try:
            back_up_cloud(ctx, connect(svc.settings.cloud.os_cloud), selection, level)
        except StackvaultError as exc:
            log.warning("backup of server %s started through the API failed: %s", server.id, exc)

    threading.Thread(target=run, name=f"sv-api-backup-{server.id[:8]}", daemon=True).start()
    return jsonify({"backup": {"server_id": server.id, "level": level.value}}), HTTPStatus.ACCEPTED
