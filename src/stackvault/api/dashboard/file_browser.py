"""The dashboard's file browser: a directory inside a backup's disk, its subdirectories as links and
a download for each regular file. The pages call the API's own functions (backup_files.file_list,
file_response) under the API's rule, `stackvault:backup:files`: a user browses only the backups
their project may see, and another project's backup is the same 404 as one that does not exist.
"""

from __future__ import annotations

import posixpath
import time

from flask import g, request

from ..backup_files import file_list, file_response
from ..backups import backup_list
from ..scope import scope
from .views import _page, blueprint


def _crumbs(path: str) -> list[tuple[str, str]]:
    """(name, path) of each directory from the root down to `path`."""
    crumbs, parent = [("/", "/")], "/"
    for part in [p for p in path.split("/") if p]:
        parent = posixpath.join(parent, part)
        crumbs.append((part, parent))
    return crumbs


@blueprint.app_template_filter("epoch")
def _epoch(seconds: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds)) if seconds is not None else "-"


@blueprint.get("/backups/<backup_id>/files")
def browse_files(backup_id: str):
    within = scope("stackvault:backup:files", every=g.every)
    listed = file_list(within, backup_id, request.args.get("path") or "/", request.args.get("disk"))
    backup = next(b for b in backup_list(within) if b["backup_id"] == listed["backup_id"])
    return _page("files.html", title=f"Files of {listed['path']}", listed=listed, backup=backup,
                 crumbs=_crumbs(listed["path"]))


@blueprint.get("/backups/<backup_id>/files/content")
def download_file(backup_id: str):
    return file_response(scope("stackvault:backup:files", every=g.every), backup_id,
                         request.args.get("path") or "/", request.args.get("disk"))
