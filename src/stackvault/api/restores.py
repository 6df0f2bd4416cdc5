"""/v1/restores: a backup of a server restored to a new server in the caller's own project, followed
until the server is ACTIVE; and the cancel of a restore that is still running (/v1/jobs/{id}/cancel).

The restore lands in the project of the caller's token, always: it runs with a Keystone trust from
the caller limited to that project (api/delegation.py). A project member restores the project's
backups; an admin may restore any project's backup, into the admin's own project.
"""

from __future__ import annotations

import threading
import uuid
from http import HTTPStatus

from flask import Blueprint, jsonify

from ..engine.repository import resolve_prefix
from ..errors import NotFoundError, UsageError
from .delegation import trust_from
from .faults import ApiError
from .restore_runs import RestorePhase, RestoreRun, run_restore
from .scope import Scope, json_object, scope, server_of, service, visible_backups
from .servers import caller_connection

blueprint = Blueprint("restores", __name__)

#: Nova's limit on a server's name.
NAME_MAX = 255


def start_restore(within: Scope, backup_ref: str, name: str, flavor: str | None = None,
                  network: str | None = None) -> RestoreRun:
    """Check the request, get the caller's trust, and start the restore's thread."""
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX:
        raise UsageError("a restore needs the new server's name (1 to 255 characters)", "give `name`")
    if not backup_ref:
        raise UsageError("which backup?", "give `backup_id` (see GET /v1/backups)")
    svc = service()
    ctx = svc.context()
    rows = {row.backup_id: row for row in visible_backups(within)}
    row = rows[resolve_prefix(backup_ref, list(rows), ctx.repo.location)]
    if server_of(row.source) is None:
        raise UsageError(f"backup {row.backup_id} is not of a server", "restore it with `stackvault restore`")
    who = within.caller
    trust_id = trust_from(svc, who, caller_connection(who))
    job_id = ctx.start_reading_job("restore") or uuid.uuid4().hex
    run = RestoreRun(id=job_id, project_id=who.project_id, user_id=who.user_id, backup_id=row.backup_id,
                     server_name=name, flavor=flavor or None, network_ref=network or None, size=row.size)
    svc.restores[job_id] = run
    threading.Thread(target=run_restore, args=(svc, run, trust_id), name=f"sv-api-restore-{job_id[:8]}",
                     daemon=True).start()
    return run


def find_restore(within: Scope, restore_id: str) -> RestoreRun:
    """A restore of a project `within` covers: running in this process, or recorded in the catalog."""
    from ..jobs.history import JobFilter, job_history

    run = service().restores.get(restore_id)
    if run is None:
        for entry in job_history(service().context(), JobFilter(kind="restore")):
            if entry.job_id == restore_id and entry.report.get("project_id"):
                run = RestoreRun.from_report(entry.job_id, entry.report)
    if run is None or not within.covers(run.project_id):
        raise NotFoundError(f"no restore {restore_id!r}", "list the restores with GET /v1/jobs")
    return run


def restore_view(within: Scope, run: RestoreRun) -> dict:
    """A restore as the API shows it, with its server's status as Nova tells the caller."""
    from ..cloud.servers import find_server

    shown = run.to_dict()
    shown["server_status"] = None
    if run.server_id:
        server = find_server(caller_connection(within.caller), run.server_id,
                             all_projects=within.project_id != within.caller.project_id)
        shown["server_status"] = server.status if server is not None else "DELETED"
    return shown


def cancel_restore(within: Scope, job_id: str) -> RestoreRun:
    run = find_restore(within, job_id)
    if run.phase is not RestorePhase.RESTORING:
        raise ApiError(HTTPStatus.CONFLICT, f"restore {job_id} is past its disks ({run.phase.value})",
                       "nothing to cancel; delete the server if it is not wanted")
    run.cancel.set()
    return run


@blueprint.post("/v1/restores")
def create_restore():
    """Restore a backup of a server to a new server in the caller's project.
    ---
    post:
      summary: Start a restore
      requestBody:
        content:
          application/json:
            schema:
              type: object
              required: [backup_id, name]
              properties:
                backup_id: {type: string, description: the backup's id or a unique prefix}
                name: {type: string, description: the new server's name}
                flavor: {type: string, description: "flavor name or id (default: the original's)"}
                network: {type: string, description: "network name or id (default: the original's)"}
      responses:
        202: {description: "{restore: {id, status, ...}}: started; follow it with GET /v1/restores/{id}"}
        400: {description: no name, or a backup that is not of a server}
        403: {description: the rules refuse the caller (a reader), or Keystone refuses the trust}
        404: {description: no such backup in the caller's project (another project's is not told apart)}
    """
    within = scope("stackvault:restore:create")
    body = json_object(required=False)
    run = start_restore(within, str(body.get("backup_id") or ""), str(body.get("name") or ""),
                        body.get("flavor"), body.get("network"))
    response = jsonify({"restore": run.to_dict()})
    response.headers["Location"] = f"/v1/restores/{run.id}"
    return response, HTTPStatus.ACCEPTED


@blueprint.get("/v1/restores/<restore_id>")
def show_restore(restore_id: str):
    """Follow a restore: its status (restoring, booting, active, failed, cancelled), bytes written, the
    new server and its status.
    ---
    get:
      summary: Show a restore
      parameters:
      - {in: path, name: restore_id, required: true, schema: {type: string}}
      responses:
        200: {description: "{restore: {id, status, server_id, server_status, bytes_written, error, fix, ...}}"}
        404: {description: no such restore in the caller's project}
    """
    within = scope("stackvault:restore:show")
    return jsonify({"restore": restore_view(within, find_restore(within, restore_id))})


@blueprint.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    """Cancel a running restore: it stops at its next block and removes what it made.
    ---
    post:
      summary: Cancel a job
      parameters:
      - {in: path, name: job_id, required: true, schema: {type: string}}
      responses:
        202: {description: "{restore: {...}}: the cancel is asked; the restore ends `cancelled`"}
        404: {description: no such running restore in the caller's project}
        409: {description: the restore is past its disks (booting or ended)}
    """
    within = scope("stackvault:job:cancel")
    return jsonify({"restore": cancel_restore(within, job_id).to_dict()}), HTTPStatus.ACCEPTED
