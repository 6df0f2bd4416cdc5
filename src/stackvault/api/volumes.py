"""/v1/volumes: a project's Cinder volumes with their protection status and last backup.

As for servers, Cinder lists the volumes with the caller's own token, so the cloud decides what the
caller may see; the service adds which policies select each volume (their `volumes` patterns) and its
newest backup.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..cloud.inventory import selects_volume
from ..cloud.volumes import visible_volumes
from ..service.policy_run import policy_selection
from .scope import Scope, cross_project, newest_backups, scope, service, volume_of
from .servers import caller_connection

blueprint = Blueprint("volumes", __name__)


def _protecting(volume) -> list[str]:
    """The enabled policies whose selection takes `volume`."""
    svc = service()
    return [policy.name for policy in svc.policies()
            if policy.enabled and volume.project_id == svc.policy_project(policy)
            and selects_volume(policy_selection(policy), volume)]


@blueprint.get("/v1/volumes")
def list_volumes():
    """The caller's volumes, each with the policies protecting it and its newest backup.
    ---
    get:
      summary: List volumes with their protection status
      parameters:
      - {in: query, name: project_id, schema: {type: string}, description: another project (admin)}
      - {in: query, name: all_projects, schema: {type: boolean}, description: every project (admin)}
      responses:
        200:
          description: "{volumes: [{id, name, status, size_gb, project_id, attached_to, protected, policies,
            last_backup}]}"
    """
    return jsonify({"volumes": volume_list(scope("stackvault:volume:list"))})


def volume_list(within: Scope) -> list[dict]:
    """The volumes `within` covers (from Cinder, with the caller's token), with protection and newest backup.
    A volume attached to a server is also protected through that server's backups, which /v1/servers shows."""
    newest = newest_backups(within, volume_of)
    out = []
    for volume in visible_volumes(caller_connection(within.caller), **cross_project(within)):
        policies = _protecting(volume)
        out.append({"id": volume.id, "name": volume.name, "status": volume.status, "size_gb": volume.size,
                    "project_id": volume.project_id or within.caller.project_id,
                    "attached_to": [a.get("server_id") for a in volume.attachments or []],
                    "protected": bool(policies), "policies": policies, "last_backup": newest.get(volume.id)})
    return out
