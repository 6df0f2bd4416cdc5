"""/v1/policies: the config's `[policy.NAME]` tables that back up the caller's project (read only:
an admin changes them in the config of `stackvault server`, docs/service.md)."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify

from ..config import Policy
from .scope import Scope, scope, service

blueprint = Blueprint("policies", __name__)


def _shown(policy: Policy, project_id: str) -> dict:
    """What a project's user may read of a policy: what it selects, when, how, how long it keeps.
    The clouds.yaml entry it connects with is the proxy's business."""
    return {"name": policy.name, "project_id": project_id, "enabled": policy.enabled,
            "schedule": policy.schedule, "timezone": policy.timezone, "level": policy.level,
            "full_on": policy.full_on, "full_every_days": policy.full_every_days,
            "servers": policy.servers, "server_tags": policy.server_tags, "server_metadata": policy.server_metadata,
            "all": policy.all, "exclude": policy.exclude, "volumes": policy.volumes,
            "availability_zones": policy.availability_zones, "retention": asdict(policy.retention),
            "require_consistency": policy.require_consistency or service().settings.cloud.require_consistency}


@blueprint.get("/v1/policies")
def list_policies():
    """The policies that back up servers or volumes of the caller's project.
    ---
    get:
      summary: List policies
      parameters:
      - {in: query, name: project_id, schema: {type: string}, description: another project (admin)}
      - {in: query, name: all_projects, schema: {type: boolean}, description: every policy (admin)}
      responses:
        200: {description: "{policies: [{name, project_id, enabled, schedule, level, servers, retention, ...}]}"}
    """
    return jsonify({"policies": policy_list(scope("stackvault:policy:list"))})


def policy_list(within: Scope) -> list[dict]:
    """The config's policies that back up a project `within` covers."""
    svc = service()
    projects = {policy.name: svc.policy_project(policy) for policy in svc.policies()}
    return [_shown(p, projects[p.name]) for p in svc.policies() if within.covers(projects[p.name])]
