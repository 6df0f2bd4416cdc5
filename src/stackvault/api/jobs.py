"""/v1/jobs: the job history of `stackvault jobs`, limited to the jobs of the caller's backups.

A job row names no project; a backup job is the project's when the backup it made is. Jobs that made
no backup of a project's server (a prune, a gc, a failed backup) are seen with `all_projects` only.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..errors import NotFoundError
from .scope import Scope, scope, service, visible_backups

blueprint = Blueprint("jobs", __name__)


def visible_jobs(within: Scope) -> list:  # of JobEntry
    """The jobs `within` covers, oldest first."""
    from ..jobs.history import JobFilter, job_history

    entries = job_history(service().context(), JobFilter())
    if within.project_id is None:
        return entries
    mine = {row.backup_id for row in visible_backups(within)}
    return [e for e in entries if e.backup_id in mine]


@blueprint.get("/v1/jobs")
def list_jobs():
    """The jobs of the caller's project, oldest first.
    ---
    get:
      summary: List jobs
      parameters:
      - {in: query, name: project_id, schema: {type: string}, description: another project (admin)}
      - {in: query, name: all_projects, schema: {type: boolean}, description: every job (admin)}
      responses:
        200: {description: "{jobs: [...]}, each as `stackvault jobs --json` gives it"}
    """
    return jsonify({"jobs": [e.to_dict() for e in visible_jobs(scope("stackvault:job:list"))]})


@blueprint.get("/v1/jobs/<job_id>")
def show_job(job_id: str):
    """One job with every item, its error and fix, as `stackvault jobs show --json` gives it.
    ---
    get:
      summary: Show a job
      parameters:
      - {in: path, name: job_id, required: true, schema: {type: string}}
      responses:
        200: {description: "{job: {...}}"}
        404: {description: no such job in the caller's project (another project's is not told apart)}
    """
    return jsonify({"job": job_detail(scope("stackvault:job:show"), job_id).to_dict(detailed=True)})


def job_detail(within: Scope, job_id: str):  # a JobEntry
    """One job `within` covers (another project's is not found, as one that does not exist)."""
    found = [e for e in visible_jobs(within) if e.job_id == job_id]
    if not found:
        raise NotFoundError(f"no job {job_id!r}", "list the jobs with GET /v1/jobs")
    return found[0]
