"""Server snapshots through Nova's createImage, and the failures Nova reports in different ways.

Image-backed servers: Nova accepts the request (202), snapshots the disk, uploads it to Glance; when a
required quiesce fails the image is deleted and the reason is only in the server's instance actions.
Volume-backed servers: Nova quiesces synchronously, so a required quiesce that fails makes the request
itself fail (409 "Failed to quiesce instance: ..."); on success Nova makes a Cinder snapshot of every
attached volume and a 0-byte image whose `block_device_mapping` property lists them.
Every object made here is tagged with the job id (`stackvault_temp`), so `stackvault cleanup` can
find what a killed job left behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc
from openstack.image.v2.image import Image

from ..retrying import first_line
from .connection import CloudError, cloud_call
from .consistency import REQUIRE_PROPERTY, quiesce_fix
from .removal import remove

TEMP_KEY = "stackvault_temp"
POLL_MAX_S = 5.0


class QuiesceFailed(CloudError):
    """Nova could not freeze the guest's file systems and the image requires it."""


@dataclass
class ServerSnapshot:
    image: Image
    volume_snapshots: list[dict] = field(default_factory=list)  # Nova's block_device_mapping entries

    @property
    def volume_backed(self) -> bool:
        return bool(self.volume_snapshots)


T = TypeVar("T")


def _poll(what: str, timeout_s: float, check: Callable[[], T | None]) -> T:
    """Call `check()` until it returns a value; it raises to fail.

    The pause between two checks is a twentieth of the time waited so far (0.1 s to POLL_MAX_S): a
    wait never runs more than ~5% past the moment the cloud was ready, which matters for the short
    waits that add up on every server's backup, and a long wait asks the cloud's APIs rarely (a
    ten-minute snapshot takes ~200 checks, where a fixed 1 s pause took 600).
    """
    started = time.monotonic()
    while True:
        value = check()
        if value is not None:
            return value
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise CloudError(f"timed out after {timeout_s:.0f} s waiting for {what}",
                             "raise the timeout (--timeout / [cloud] timeout) or check the cloud")
        time.sleep(min(POLL_MAX_S, max(0.1, waited / 20)))


def _action_failure(conn, server) -> str | None:
    """The error Nova recorded for the newest createImage of this server, if any."""
    try:
        actions = sorted(conn.compute.server_actions(server), key=lambda a: a.start_time or "", reverse=True)
        for action in actions:
            if action.action != "createImage":
                continue
            detail = conn.compute.get_server_action(action.request_id, server)
            messages = [action.message or ""]
            for event in detail.events or []:
                ev = event if isinstance(event, dict) else event.to_dict()
                if (ev.get("result") or "").lower() == "error":
                    tb = (ev.get("traceback") or "").strip().splitlines()
                    messages.append(tb[-1] if tb else ev.get("event", ""))
            return "; ".join(m for m in messages if m) or None
    except os_exc.SDKException:
        return None
    return None


def snapshot_server(conn, server, job_id: str, *, timeout_s: float, image_ref: str = "") -> ServerSnapshot:
    name = f"stackvault-{server.name}-{job_id[:8]}"
    try:
        image_id = server.create_image(conn.compute, name, {TEMP_KEY: job_id})
    except os_exc.ConflictException as exc:
        msg = first_line(exc)
        if "quiesce" in msg.lower():
            raise QuiesceFailed(f"server {server.name} ({server.id}): Nova refused the snapshot: {msg} "
                                f"(the image requires {REQUIRE_PROPERTY}=yes)",
                                quiesce_fix(server.name, image_ref)) from None
        raise CloudError(f"server {server.name}: Nova refused the snapshot: {msg}",
                         "wait for the server's current task to finish, then retry") from None
    except os_exc.HttpException as exc:
        raise CloudError(f"server {server.name}: createImage failed: {first_line(exc)}",
                         "check the server's state and the compute service") from None

    def ready():
        try:
            image = cloud_call(f"get image {image_id}", lambda: conn.image.get_image(image_id))
        except os_exc.NotFoundException:
            image = None
        if image is None or image.status in ("killed", "deleted", "pending_delete"):
            reason = _action_failure(conn, server) or "the snapshot image was deleted by Nova"
            if "quiesce" in reason.lower():
                raise QuiesceFailed(f"server {server.name} ({server.id}): snapshot failed: {reason} "
                                    f"(the image requires {REQUIRE_PROPERTY}=yes)", quiesce_fix(server.name, image_ref))
            raise CloudError(f"server {server.name}: snapshot failed: {reason}", "see `openstack server event list`")
        return image if image.status == "active" else None

    try:
        image = _poll(f"the snapshot of server {server.name}", timeout_s, ready)
    except BaseException:
        delete_image(conn, image_id)
        raise
    mapping = (image.properties or {}).get("block_device_mapping")
    if isinstance(mapping, str):
        mapping = json.loads(mapping)
    snap = ServerSnapshot(image=image, volume_snapshots=[m for m in (mapping or []) if m.get("snapshot_id")])
    try:
        for entry in snap.volume_snapshots:
            wait_snapshot(conn, entry["snapshot_id"], timeout_s)
    except BaseException:
        delete_server_snapshot(conn, snap)
        raise
    return snap


def create_volume_snapshot(conn, volume_id: str, name: str, job_id: str) -> str:
    """Ask Cinder for a snapshot of the volume (attached or not), tagged with the job; its id. The caller
    registers its deletion, then waits for it (`wait_snapshot`). Not retried: a second try could make two."""
    try:
        snap = conn.block_storage.create_snapshot(volume_id=volume_id, force=True, name=name,
                                                  metadata={TEMP_KEY: job_id})
    except os_exc.HttpException as exc:
        raise CloudError(f"cannot snapshot volume {volume_id}: {first_line(exc)}",
                         "check the snapshot quota and the volume service") from None
    return snap.id


def wait_snapshot(conn, snapshot_id: str, timeout_s: float) -> object:
    def ready():
        snap = cloud_call(f"get Cinder snapshot {snapshot_id}", lambda: conn.block_storage.get_snapshot(snapshot_id))
        if snap.status == "error":
            raise CloudError(f"Cinder snapshot {snapshot_id} went to error", "check the volume service")
        return snap if snap.status == "available" else None

    return _poll(f"Cinder snapshot {snapshot_id}", timeout_s, ready)


def delete_image(conn, image_id: str, leftovers: list[str] | None = None) -> None:
    remove(f"image {image_id}", lambda: conn.image.delete_image(image_id, ignore_missing=True), leftovers)


def delete_volume_snapshot(conn, snapshot_id: str, timeout_s: float = 300,
                           leftovers: list[str] | None = None) -> bool:
    """True once the snapshot is gone; False (and it noted in `leftovers`) when it could not be deleted."""

    def delete() -> None:
        conn.block_storage.delete_snapshot(snapshot_id, ignore_missing=True)
        conn.block_storage.wait_for_delete(conn.block_storage.get_snapshot(snapshot_id), wait=timeout_s)

    return remove(f"Cinder snapshot {snapshot_id}", delete, leftovers)


def delete_server_snapshot(conn, snap: ServerSnapshot, leftovers: list[str] | None = None,
                           keep: set[str] | frozenset[str] = frozenset()) -> None:
    """The image and Nova's Cinder snapshots, but those in `keep` (retained as bases of the next
    changed-block backups, cloud/rbd.py): without the image they are no leftover of a job."""
    for entry in snap.volume_snapshots:
        if entry["snapshot_id"] not in keep:
            delete_volume_snapshot(conn, entry["snapshot_id"], leftovers=leftovers)
    delete_image(conn, snap.image.id, leftovers)


def snapshot_quota(conn) -> tuple[int, int] | None:
    """Cinder's snapshot quota of the project: (used, maximum; -1 is unlimited), or None without a limits API."""
    try:
        limits = cloud_call("get volume limits", lambda: conn.block_storage.get_limits()).absolute
        return int(limits.total_snapshots_used), int(limits.max_total_snapshots)
    except (os_exc.SDKException, ks_exc.ClientException, AttributeError, TypeError, ValueError):
        return None


def snapshot_quota_short(conn, needed: int) -> tuple[int, int] | None:
    """(used, maximum) when the snapshot quota cannot hold `needed` more, else None."""
    quota = snapshot_quota(conn)
    if quota is None:
        return None  # no limits API: Cinder's own error will say it
    used, maximum = quota
    return quota if 0 <= maximum < used + needed else None


def check_snapshot_quota(conn, needed: int, what: str) -> None:
    """Fail before snapshotting when Cinder's snapshot quota cannot hold `needed` more; `what` names the
    item being backed up as the user knows it (`server web1`, `volume data1`)."""
    short = snapshot_quota_short(conn, needed)
    if short is not None:
        used, maximum = short
        raise CloudError(f"{what}: needs {needed} Cinder snapshots but the quota allows "
                         f"{maximum - used} more ({used} of {maximum} used)",
                         "raise the project's snapshot quota or delete old snapshots")
