"""/v1/backups: a project's backups, as `stackvault list` and `stackvault show` give them."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import render
from ..engine.repository import resolve_prefix
from .scope import Scope, project_of, scope, server_of, service, visible_backups

blueprint = Blueprint("backups", __name__)


@blueprint.get("/v1/backups")
def list_backups():
    """The backups of the caller's project, oldest first.
    ---
    get:
      summary: List backups
      parameters:
      - {in: query, name: project_id, schema: {type: string}, description: another project (admin)}
      - {in: query, name: all_projects, schema: {type: boolean}, description: every project (admin)}
      responses:
        200: {description: "{backups: [...]}, each as `stackvault list --json` gives it"}
        401: {description: no valid Keystone token}
        403: {description: the rules refuse the caller on that project}
    """
    return jsonify({"backups": backup_list(scope("stackvault:backup:list"))})


def backup_list(within: Scope) -> list[dict]:
    """The backups `within` covers, as `stackvault list --json` gives them, with their project, server
    and duration."""
    rows = visible_backups(within)
    listed = render.list_result(rows, [], [], None, None)["backups"]
    return [{**entry, "project_id": project_of(row.source), "server": server_of(row.source),
             "duration_s": row.duration_s} for entry, row in zip(listed, rows, strict=True)]


@blueprint.get("/v1/backups/<backup_id>")
def show_backup(backup_id: str):
    """One backup with its disks and consistency proof, as `stackvault show --json` gives it.
    ---
    get:
      summary: Show a backup
      parameters:
      - {in: path, name: backup_id, required: true, schema: {type: string}, description: its id or a unique prefix}
      responses:
        200: {description: "{backup: {...}}"}
        404: {description: no such backup in the caller's project (another project's is not told apart)}
    """
    return jsonify({"backup": backup_detail(scope("stackvault:backup:show"), backup_id)})


def backup_detail(within: Scope, backup_id: str) -> dict:
    """One backup `within` covers (else NotFoundError, as for one that does not exist), with its proof."""
    from ..jobs.quiesce_proof import with_proof

    repo = service().context().repo
    record = repo.get_backup(resolve_prefix(backup_id, [r.backup_id for r in visible_backups(within)], repo.location))
    return with_proof(repo, render.record_dict(record))
