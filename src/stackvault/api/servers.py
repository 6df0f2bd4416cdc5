"""/v1/servers: a project's servers with their protection status and last backup.

The servers are listed from Nova with the caller's own token, so the cloud itself decides what the
caller may see; the service adds which policies select each server and its newest backup.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..cloud.inventory import Selection, selects
from ..config import PROXY_STATE_POLICY
from .access import Caller
from .scope import Scope, scope, server_of, service, visible_backups

blueprint = Blueprint("servers", __name__)


def _caller_connection(who: Caller):
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
    for name, policy in svc.settings.policies.items():
        if name == PROXY_STATE_POLICY or not policy.enabled:
            continue
        project = policy.project or svc.policy_project(policy.os_cloud or svc.settings.cloud.os_cloud)
        selection = Selection(servers=policy.servers, all_servers=policy.all, tags=policy.server_tags,
                              metadata=policy.server_metadata, exclude=policy.exclude,
                              availability_zones=list(policy.availability_zones))
        if server.project_id == project and selects(selection, server):
            names.append(name)
    return names


def _servers(within: Scope) -> list:
    conn = _caller_connection(within.caller)
    query: dict[str, object] = {"details": True}
    if within.project_id != within.caller.project_id:  # an admin asking about other projects
        query["all_projects"] = True
        if within.project_id is not None:
            query["project_id"] = within.project_id
    return list(conn.compute.servers(**query))


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
    within = scope("stackvault:server:list")
    newest: dict[str, dict] = {}
    for row in visible_backups(within):  # oldest first: the last one seen is the newest
        server = server_of(row.source)
        if server:
            newest[server["id"]] = {"backup_id": row.backup_id, "created": row.created, "level": row.level,
                                    "status": row.status, "consistency": row.consistency}
    out = []
    for server in _servers(within):
        policies = _protecting(server)
        out.append({"id": server.id, "name": server.name, "status": server.status, "project_id": server.project_id,
                    "protected": bool(policies), "policies": policies, "last_backup": newest.get(server.id)})
    return jsonify({"servers": out})
