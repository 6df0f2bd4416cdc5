"""Cinder's side of reading volumes straight from Ceph: where a volume lives, and the retained bases.

Where: Cinder never names a volume's Ceph pool to its users, so the backend is what Cinder says (the
backend section of the volume's `os-vol-host-attr:host`, `host@backend#pool`, visible to admins; its
volume type's `volume_backend_name` extra spec; the host's pool part) and the pool is what the
operator maps that backend to (`[ceph] volume_backends`). That is a claim, not a fact: the job then
opens `volume-<id>@snapshot-<snapshot id>` (the names Cinder's RBD driver gives) through librbd, and
only an image and snapshot that are really there are read. A wrong mapping therefore costs a
fallback to the attach path, never a wrong backup.

Retained bases: the Cinder snapshot a backup read from RBD is kept after the backup, as the base the
next Incremental diffs from. It is tagged `stackvault_base` (= the repository id) in its Cinder
metadata, and no longer `stackvault_temp`, so `stackvault cleanup` leaves it; one per volume and
repository (two while Differentials use the last Full's). After each committed backup of a volume,
whichever way it was read, the bases no committed backup diffs from any more are deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from ..retrying import first_line
from .connection import CloudError, cloud_call
from .snapshots import TEMP_KEY, snapshot_quota_short

BASE_KEY = "stackvault_base"
#: Set on a base Cinder refused to delete (a volume was cloned from it), with the date: warned about once.
REFUSED_KEY = "stackvault_base_refused"
#: How long a superseded base's deletion is waited for: Cinder refuses within seconds, and a deletion it
#: took on finishes on its own.
BASE_DELETE_WAIT_S = 30.0
#: How long a released base may take to leave Cinder's quota usage.
QUOTA_SETTLE_S = 10.0


def rbd_image(volume) -> str:
    """The RBD image Cinder's RBD driver keeps the volume in: `volume-<id>`, or `volume-<name id>`
    after a migration (the volume kept its id, the data moved to the image of the new one)."""
    return f"volume-{getattr(volume, 'migration_id', None) or volume.id}"


def rbd_snapshot(snapshot_id: str) -> str:
    """The RBD snapshot Cinder's RBD driver makes for a Cinder snapshot."""
    return f"snapshot-{snapshot_id}"


@dataclass(frozen=True)
class VolumeRef:
    """A server's volume that Cinder would not show: its id and size only, so its placement is unknown
    and it is read through a temporary volume, as without `[ceph]`."""

    id: str
    size: int
    volume_type: str | None = None


def server_volume(conn, volume_id: str, size_gb: int):
    """Cinder's record of a server's volume (its host or type says where it lives), else a VolumeRef."""
    try:
        return cloud_call(f"get volume {volume_id}", lambda: conn.block_storage.get_volume(volume_id))
    except (os_exc.SDKException, ks_exc.ClientException):
        return VolumeRef(volume_id, size_gb)


@dataclass(frozen=True)
class Placement:
    """The backend names Cinder gives for a volume, in the order they are tried, each with the field
    that said it; `said_by` when there is none says why."""

    candidates: tuple[tuple[str, str], ...]  # (name to look up in [ceph] volume_backends, the field that said it)
    said_by: str = ""

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.candidates)


def volume_placement(conn, volume) -> Placement:
    """The backend names Cinder gives for `volume`, most telling first: the backend section of its host
    (`host@backend#pool`), then its volume type's `volume_backend_name`, then the host's pool part
    (Cinder's RBD driver reports its `volume_backend_name` there, which a mapping may name instead).
    The section comes first because two backends may share one `volume_backend_name`; the volume type
    is asked also when the host is shown, since a host without `@backend` names no backend at all.
    None when Cinder shows neither (both need an admin, by default)."""
    found: list[tuple[str, str]] = []
    host = getattr(volume, "host", None) or ""
    section, _, pool = host.partition("@")[2].partition("#")
    if section:
        found.append((section, f"os-vol-host-attr:host {host}"))
    if volume.volume_type:
        try:
            vtype = cloud_call(f"find volume type {volume.volume_type}",
                               lambda: conn.block_storage.find_type(volume.volume_type, ignore_missing=True))
        except (os_exc.SDKException, ks_exc.ClientException):
            vtype = None
        name = ((vtype.extra_specs or {}) if vtype is not None else {}).get("volume_backend_name")
        if name:
            found.append((name, f"volume type {volume.volume_type} (volume_backend_name {name})"))
    if pool:
        found.append((pool, f"os-vol-host-attr:host {host}"))
    unique: dict[str, str] = {}
    for name, said in found:
        unique.setdefault(name, said)
    if unique:
        return Placement(tuple(unique.items()))
    return Placement((), "Cinder shows neither the volume's host nor its type's volume_backend_name "
                         "(both need an admin role by default)")


def retain_base(conn, snapshot_id: str, repo_id: str) -> None:
    """Turn a job's temporary snapshot (its own, or Nova's of a volume-backed server) into the retained
    base of `repo_id`: tagged first, untagged as temporary second, so a job killed in between leaves a
    snapshot `cleanup` also keeps."""
    try:
        conn.block_storage.set_snapshot_metadata(snapshot_id, **{BASE_KEY: repo_id})
        snapshot = conn.block_storage.get_snapshot(snapshot_id)
        if TEMP_KEY in (snapshot.metadata or {}):  # Nova's snapshots of a server never had it
            conn.block_storage.delete_snapshot_metadata(snapshot_id, keys=[TEMP_KEY])
    except (os_exc.SDKException, ks_exc.ClientException) as exc:
        raise CloudError(f"cannot tag Cinder snapshot {snapshot_id} as the next backup's base: {first_line(exc)}",
                         "check the volume service; the next backup of the volume reads it in full") from None


def bases(conn, *, repo_id: str | None = None, volume_ids: set[str] | None = None) -> list[dict]:
    """Retained base snapshots in the project (of one repository, of some volumes): one list call,
    filtered by volume when there is one."""
    found = []
    query = {"volume_id": next(iter(volume_ids))} if volume_ids is not None and len(volume_ids) == 1 else {}
    for snap in cloud_call("list volume snapshots", lambda: list(conn.block_storage.snapshots(details=True, **query))):
        meta = snap.metadata or {}
        tag = meta.get(BASE_KEY)
        if tag is None or (repo_id is not None and tag != repo_id):
            continue
        if volume_ids is not None and snap.volume_id not in volume_ids:
            continue
        found.append({"id": snap.id, "name": snap.name, "volume_id": snap.volume_id, "repository": tag,
                      "size_gb": snap.size, "created_at": snap.created_at, "status": snap.status,
                      "refused": meta.get(REFUSED_KEY)})
    return found


@dataclass
class Released:
    """What releasing a volume's superseded bases did: deleted, refused by Cinder (newly, or again), failed."""

    deleted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # refused for the first time: warned about once
    still_refused: list[str] = field(default_factory=list)  # refused before and again: no new warning
    failed: list[str] = field(default_factory=list)  # "what: why", for the report's warning


def release_bases(conn, volume_id: str, repo_id: str, *, keep: Callable[[], set[str]],
                  wait_s: float = BASE_DELETE_WAIT_S) -> Released:
    """Delete `repo_id`'s bases of the volume but those `keep()` names (one list call; `keep` is asked
    only when there is a base to judge, and what it raises leaves every base in place).

    Each deletion is waited for briefly, and not retried: Cinder refuses to delete a snapshot a volume
    was cloned from by putting it back to `available`, which is seen in seconds; such a base is tagged
    `stackvault_base_refused`, reported once, and tried again (briefly) by later backups, so a base
    freed later (its clone deleted or flattened) goes then."""
    done = Released()
    try:
        found = bases(conn, repo_id=repo_id, volume_ids={volume_id})
    except (os_exc.SDKException, ks_exc.ClientException) as exc:
        done.failed.append(f"superseded base snapshots of volume {volume_id}: cannot list them: {first_line(exc)}")
        return done
    kept = keep() if found else set()
    for snap in found:
        if snap["id"] in kept:
            continue
        outcome = delete_base(conn, snap["id"], wait_s)
        if outcome == "deleted":
            done.deleted.append(snap["id"])
        elif outcome == "refused":
            if snap["refused"]:
                done.still_refused.append(snap["id"])
            else:
                done.refused.append(snap["id"])
                with contextlib.suppress(os_exc.SDKException, ks_exc.ClientException):
                    conn.block_storage.set_snapshot_metadata(snap["id"], **{REFUSED_KEY: _today()})
        else:
            done.failed.append(f"Cinder snapshot {snap['id']}: {outcome}")
    return done


def delete_base(conn, snapshot_id: str, wait_s: float = BASE_DELETE_WAIT_S) -> str:
    """`deleted` (also: gone already, or still deleting after `wait_s`: Cinder took it on), `refused`
    (Cinder put it back to `available`, as it does for a snapshot a volume was cloned from), or why not."""
    try:
        conn.block_storage.delete_snapshot(snapshot_id, ignore_missing=True)
    except os_exc.NotFoundException:
        return "deleted"
    except (os_exc.SDKException, ks_exc.ClientException) as exc:
        return first_line(exc)
    started = time.monotonic()
    while True:
        try:
            snap = conn.block_storage.get_snapshot(snapshot_id)
        except os_exc.NotFoundException:
            return "deleted"
        except (os_exc.SDKException, ks_exc.ClientException) as exc:
            return first_line(exc)
        if snap.status == "available":  # Cinder's API sets `deleting` before it answers: this is a refusal
            return "refused"
        if snap.status == "error_deleting":
            return "Cinder could not delete it (error_deleting)"
        waited = time.monotonic() - started
        if waited > wait_s:
            return "deleted"  # Cinder is on it; a base still there is retried by the next backup
        time.sleep(min(2.0, max(0.1, waited / 10)))


def make_room_for_snapshot(conn, volume_ids: list[str], repo_id: str) -> str | None:
    """When Cinder's snapshot quota has no room for the job's snapshots (one per volume) and `repo_id`
    keeps bases of these volumes, release as many bases as it takes: those volumes are then read in
    full, where the backup would otherwise fail. The warning returned says why; None when nothing
    was released."""
    needed = len(volume_ids)
    short = snapshot_quota_short(conn, needed)
    if short is None:
        return None
    used, maximum = short
    try:
        found = bases(conn, repo_id=repo_id, volume_ids=set(volume_ids))
    except (os_exc.SDKException, ks_exc.ClientException):
        return None  # the quota check that follows says what is wrong
    released: list[str] = []
    for base in found:  # only as many as needed: each one released costs its volume a full read
        if maximum - used + len(released) >= needed:
            break
        if delete_base(conn, base["id"]) == "deleted":
            released.append(base["id"])
    if not released:
        return None
    deadline = time.monotonic() + QUOTA_SETTLE_S  # Cinder counts a deletion a moment after the snapshot is gone
    while snapshot_quota_short(conn, needed) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    whose = "the volume" if needed == 1 else "the volumes"
    return (f"Cinder's snapshot quota was full ({used} of {maximum} snapshots): released the base snapshot "
            f"{', '.join(released)} of {whose} to make room, so this backup reads {whose} in full (raise "
            "the project's snapshot quota: each volume read from Ceph keeps one base snapshot, two while "
            "Differentials are made, beside the one each running backup takes)")


def snapshot_id_of(rbd_name: str) -> str | None:
    """The Cinder snapshot id in the RBD snapshot name Cinder's RBD driver gives (`snapshot-<id>`)."""
    return rbd_name[len("snapshot-"):] if rbd_name.startswith("snapshot-") else None


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())
