"""Cinder's side of reading volumes straight from Ceph: where a volume lives, and the retained bases.

Where: Cinder never names a volume's Ceph pool to its users, so the backend is what Cinder says (the
volume's `os-vol-host-attr:host`, `host@backend#pool`, visible to admins; else its volume type's
`volume_backend_name` extra spec) and the pool is what the operator maps that backend to (`[ceph]
volume_backends`). That is a claim, not a fact: the job then opens `volume-<id>@snapshot-<snapshot id>`
(the names Cinder's RBD driver gives) through librbd, and only an image and snapshot that are really
there are read. A wrong mapping therefore costs a fallback to the attach path, never a wrong backup.

Retained bases: the Cinder snapshot a backup read from RBD is kept after the backup, as the base the
next Incremental diffs from. It is tagged `stackvault_base` (= the repository id) in its Cinder
metadata, and no longer `stackvault_temp`, so `stackvault cleanup` leaves it; one per volume and
repository, the superseded one deleted once the next backup is committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from openstack import exceptions as os_exc

from .connection import CloudError, _first_line
from .snapshots import TEMP_KEY, delete_volume_snapshot

BASE_KEY = "stackvault_base"


def rbd_image(volume) -> str:
    """The RBD image Cinder's RBD driver keeps the volume in: `volume-<id>`, or `volume-<name id>`
    after a migration (the volume kept its id, the data moved to the image of the new one)."""
    return f"volume-{getattr(volume, 'migration_id', None) or volume.id}"


def rbd_snapshot(snapshot_id: str) -> str:
    """The RBD snapshot Cinder's RBD driver makes for a Cinder snapshot."""
    return f"snapshot-{snapshot_id}"


@dataclass(frozen=True)
class Placement:
    """Which Cinder backend a volume is on, as Cinder says it, and which field said it."""

    backends: tuple[str, ...]  # names to look up in [ceph] volume_backends, most specific first
    said_by: str


def volume_placement(conn, volume) -> Placement:
    """The backend names Cinder gives for `volume`: its host's pool and backend (`host@backend#pool`;
    Cinder's RBD driver reports its `volume_backend_name` as the pool), else its volume type's
    `volume_backend_name`; none when Cinder shows neither (both need an admin, by default)."""
    host = getattr(volume, "host", None)
    if host:
        section, _, pool = host.partition("@")[2].partition("#")
        return Placement(tuple(dict.fromkeys(n for n in (pool, section) if n)), f"os-vol-host-attr:host {host}")
    if volume.volume_type:
        try:
            vtype = conn.block_storage.find_type(volume.volume_type, ignore_missing=True)
        except os_exc.SDKException:
            vtype = None
        name = ((vtype.extra_specs or {}) if vtype is not None else {}).get("volume_backend_name")
        if name:
            return Placement((name,), f"volume type {volume.volume_type} (volume_backend_name {name})")
    return Placement((), "Cinder shows neither the volume's host nor its type's volume_backend_name "
                         "(both need an admin role by default)")


def retain_base(conn, snapshot_id: str, repo_id: str) -> None:
    """Turn a job's temporary snapshot into the retained base of `repo_id`: tagged first, untagged
    as temporary second, so a job killed in between leaves a snapshot `cleanup` also keeps."""
    try:
        conn.block_storage.set_snapshot_metadata(snapshot_id, **{BASE_KEY: repo_id})
        conn.block_storage.delete_snapshot_metadata(snapshot_id, keys=[TEMP_KEY])
    except os_exc.SDKException as exc:
        raise CloudError(f"cannot tag Cinder snapshot {snapshot_id} as the next backup's base: {_first_line(exc)}",
                         "check the volume service; the next backup of the volume reads it in full") from None


def bases(conn, *, repo_id: str | None = None, volume_ids: set[str] | None = None) -> list[dict]:
    """Retained base snapshots in the project (of one repository, of some volumes)."""
    found = []
    query = {"volume_id": next(iter(volume_ids))} if volume_ids is not None and len(volume_ids) == 1 else {}
    for snap in conn.block_storage.snapshots(details=True, **query):
        tag = (snap.metadata or {}).get(BASE_KEY)
        if tag is None or (repo_id is not None and tag != repo_id):
            continue
        if volume_ids is not None and snap.volume_id not in volume_ids:
            continue
        found.append({"id": snap.id, "name": snap.name, "volume_id": snap.volume_id, "repository": tag,
                      "size_gb": snap.size, "created_at": snap.created_at})
    return found


def release_bases(conn, volume_id: str, repo_id: str, *, keep: str | None,
                  leftovers: list[str]) -> list[str]:
    """Delete `repo_id`'s bases of the volume but `keep`; the ids deleted (what failed goes to `leftovers`)."""
    try:
        found = bases(conn, repo_id=repo_id, volume_ids={volume_id})
    except os_exc.SDKException as exc:
        leftovers.append(f"superseded base snapshots of volume {volume_id}: cannot list them: {_first_line(exc)}")
        return []
    released = []
    for snap in found:
        if snap["id"] != keep and delete_volume_snapshot(conn, snap["id"], leftovers=leftovers):
            released.append(snap["id"])
    return released
