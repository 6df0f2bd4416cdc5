"""/v1/backups/{id}/files: the files inside a backup's disk, listed and downloaded as `stackvault
files BACKUP ls` and `cat` give them (jobs.file_restore, jobs.file_download), for the backup's project.

The backup is found exactly as `GET /v1/backups/{id}` finds it, so another project's backup is the
same 404 as one that does not exist. Each request starts a libguestfs appliance (512 MiB, seconds
to start): the service runs at most APPLIANCES of them at once and answers 503 beyond, and a
download is refused with 413 above DOWNLOAD_MAX, before its first byte.
"""

from __future__ import annotations

import posixpath
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request

from ..engine.repository import resolve_prefix
from ..jobs import file_download, file_restore
from ..progress import human_bytes
from .faults import ApiError
from .scope import Scope, scope, service, visible_backups

blueprint = Blueprint("backup_files", __name__)

#: The largest file one download sends (its size in the guest's file system, holes included).
DOWNLOAD_MAX = 256 << 20
#: How long one request's appliance may run, its start and a download's transfer included.
TIMEOUT_S = 300.0
#: Appliances the service runs at once: each takes 512 MiB and a core while it starts.
APPLIANCES = 2
_appliances = threading.BoundedSemaphore(APPLIANCES)

#: `ls`'s first letter of a mode, as the listing's `type`.
_TYPES = {"d": "directory", "-": "file", "l": "link"}


@blueprint.get("/v1/backups/<backup_id>/files")
def list_files(backup_id: str):
    """A directory inside one disk of a backup, as `stackvault files BACKUP ls PATH` lists it.
    ---
    get:
      summary: List a directory of a backup's disk
      parameters:
      - {in: path, name: backup_id, required: true, schema: {type: string}, description: its id or a unique prefix}
      - {in: query, name: path, schema: {type: string, default: /}, description: an absolute path (a file lists itself)}
      - {in: query, name: disk, schema: {type: string}, description: which disk of a backup with several}
      responses:
        200: {description: "{backup_id, disk, path, entries: [{name, path, type, size, mode, mtime, uid, gid}]}"}
        400: {description: a relative path, a disk to name, a file name that is not UTF-8}
        404: {description: no such backup in the caller's project, or no such path in its disk}
        503: {description: the service already reads as many backups' files as it may at once}
    """
    return jsonify(file_list(scope("stackvault:backup:files"), backup_id, _path(), request.args.get("disk")))


def file_list(within: Scope, backup_id: str, path: str, disk: str | None) -> dict:
    """The entries of `path` in a disk of a backup `within` covers (else NotFoundError), sorted by name."""
    ref = _visible(within, backup_id)
    with _appliance():
        listed = file_restore.ls(service().context(), ref, disk or None, path, TIMEOUT_S)
    return {"backup_id": listed["backup_id"], "disk": listed["disk"], "path": posixpath.normpath(path),
            "entries": [_entry(e) for e in listed["entries"]]}


@blueprint.get("/v1/backups/<backup_id>/files/content")
def download_file(backup_id: str):
    """One regular file's bytes, as `stackvault files BACKUP cat PATH` writes them, as a download.
    ---
    get:
      summary: Download a file of a backup's disk
      parameters:
      - {in: path, name: backup_id, required: true, schema: {type: string}, description: its id or a unique prefix}
      - {in: query, name: path, required: true, schema: {type: string}, description: an absolute path of a regular file}
      - {in: query, name: disk, schema: {type: string}, description: which disk of a backup with several}
      responses:
        200: {description: "the file's bytes (application/octet-stream, Content-Disposition: attachment)"}
        400: {description: not a regular file, a relative path, a disk to name}
        404: {description: no such backup in the caller's project, or no such path in its disk}
        413: {description: the file is larger than a download may be}
        503: {description: the service already reads as many backups' files as it may at once}
    """
    return file_response(scope("stackvault:backup:files"), backup_id, _path(), request.args.get("disk"))


def file_response(within: Scope, backup_id: str, path: str, disk: str | None) -> Response:
    """The download of `path` in a disk of a backup `within` covers: streamed, the appliance and the
    slot it holds released when the response is closed (sent, or its client gone)."""
    ref = _visible(within, backup_id)
    release = _take_appliance()
    try:
        download = file_download.open_file(service().context(), ref, disk or None, path, TIMEOUT_S)
    except BaseException:
        release()
        raise
    entry = download.entry
    if entry.size > DOWNLOAD_MAX:
        download.close()
        release()
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       f"{entry.path} is {human_bytes(entry.size)} ({entry.size} bytes), more than the "
                       f"{human_bytes(DOWNLOAD_MAX)} a download may hold",
                       "ask the backup operator to extract it (`stackvault files BACKUP get`), or restore the server")
    response = Response(download.chunks(), mimetype="application/octet-stream", direct_passthrough=True)
    response.content_length = entry.size
    response.headers.set("Content-Disposition", "attachment", **_download_names(posixpath.basename(entry.path)))
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.call_on_close(download.close)
    response.call_on_close(release)
    return response


def _path() -> str:
    return request.args.get("path") or "/"


def _visible(within: Scope, backup_id: str) -> str:
    """The full id of a backup `within` covers, found as `GET /v1/backups/{id}` finds it."""
    repo = service().context().repo
    return resolve_prefix(backup_id, [r.backup_id for r in visible_backups(within)], repo.location)


def _take_appliance() -> Callable[[], None]:
    """One of the APPLIANCES slots (else 503), and the callable that gives it back once."""
    if not _appliances.acquire(blocking=False):
        raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE,
                       f"the service already reads the files of {APPLIANCES} backups, the most it reads at once",
                       "try again in a minute")
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            _appliances.release()

    return release


@contextmanager
def _appliance() -> Iterator[None]:
    """One of the slots, held for the length of the block."""
    release = _take_appliance()
    try:
        yield
    finally:
        release()


def _entry(listed: dict) -> dict:
    """An entry of `files ls --json`, with the name and type a browser shows first."""
    return {"name": posixpath.basename(listed["path"]) or "/", "type": _TYPES.get(listed["mode"][0], "other"),
            **listed}


def _download_names(name: str) -> dict[str, str]:
    """Content-Disposition's filename (ASCII, control characters replaced) and filename* (RFC 5987,
    the name itself): a guest's file name may hold anything a header must not."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    simple = "".join(c if " " <= c < "\x7f" else "_" for c in ascii_name) or "file"
    return {"filename": simple, "filename*": f"UTF-8''{quote(name, safe='')}"}
