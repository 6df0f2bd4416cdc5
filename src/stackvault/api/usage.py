"""/v1/usage: the bytes each project's backups store, for chargeback.

`bytes_stored` is what each backup added to the repository when it was made (new chunks, after
deduplication and compression), summed per project: what the project's backups cost the store.
"""

from __future__ import annotations

from collections import defaultdict

from flask import Blueprint, jsonify

from .scope import Scope, project_of, scope, visible_backups

blueprint = Blueprint("usage", __name__)


@blueprint.get("/v1/usage")
def show_usage():
    """Bytes stored, backups and their total size, per project.
    ---
    get:
      summary: Storage use per project
      parameters:
      - {in: query, name: project_id, schema: {type: string}, description: another project (admin)}
      - {in: query, name: all_projects, schema: {type: boolean}, description: every project (admin)}
      responses:
        200: {description: "{usage: [{project_id, backups, size, bytes_stored}]}"}
    """
    return jsonify({"usage": usage_of(scope("stackvault:usage:show"))})


def usage_of(within: Scope) -> list[dict]:
    """Per project `within` covers: backups, their size and the bytes they stored."""
    totals: dict[str | None, dict] = defaultdict(lambda: {"backups": 0, "size": 0, "bytes_stored": 0})
    if within.project_id is not None:
        totals[within.project_id].update()  # a project without backups is reported, with zeros
    for row in visible_backups(within):
        total = totals[project_of(row.source)]
        total["backups"] += 1
        total["size"] += row.size
        total["bytes_stored"] += row.bytes_stored
    return [{"project_id": p, **t} for p, t in sorted(totals.items(), key=lambda i: i[0] or "")]
