"""What Nova's conductor and compute manager do for one host: build, power, delete, actions.

API handlers validate and record the request, then hand the slow part to `Compute.spawn` (a
thread), as Nova's API casts to the compute service and answers 202 at once. Every step keeps
the instance's vm_state / task_state / power_state as Nova's manager sets them, and records
instance-action events (`compute__do_build_and_run_instance`, `compute_stop_instance`, ...)
with their result and traceback, since that is where a user reads why an operation failed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import threading
import traceback
import uuid as uuidlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devcloud.guest.hypervisor import (
    DiskSpec,
    GuestError,
    Hypervisor,
    QuiesceError,  # noqa: F401 - re-exported for snapshots
)
from devcloud.nova import clients, rbd
from devcloud.nova.config import NovaConfig
from devcloud.nova.store import Store

LOG = logging.getLogger(__name__)

HOST = "devcloud"
RUNNING, SHUTDOWN, NOSTATE = 1, 4, 0


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def iso_z(ts: datetime) -> str:
    """Nova's created/updated format."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_us(ts: datetime) -> str:
    """Nova's launched_at / action times format (no zone, microseconds)."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")


def host_id(project_id: str) -> str:
    """Nova's hostId: sha224 of project id + host name."""
    return hashlib.sha224((project_id + HOST).encode()).hexdigest()


class NovaError(Exception):
    """A Nova exception: `message` as Nova words it, `code` its HTTP code when surfaced."""

    code = 500

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InstanceQuiesceFailed(NovaError):
    code = 409

    def __init__(self, reason: str):
        super().__init__(f"Failed to quiesce instance: {reason}")


class Compute:
    """The compute host: instance disks, the hypervisor, Glance/Cinder calls, instance actions."""

    def __init__(self, cfg: NovaConfig, store: Store, service_token: clients.ServiceToken | None):
        self.cfg = cfg
        self.store = store
        self.service_token = service_token
        self.instances_dir = cfg.nova_dir / "instances"
        self.base_dir = self.instances_dir / "_base"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.hypervisor = Hypervisor(cfg.nova_dir / "guests", fast=cfg.fast,
                                     image_cache=Path(cfg.guest_image_cache)
                                     if cfg.guest_image_cache else None)
        self._base_locks: dict[str, threading.Lock] = {}
        self._server_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # ---- clients ---------------------------------------------------------------------------
    def glance(self, token: str) -> clients.Glance:
        return clients.Glance(self.cfg.glance_url, token, self.service_token)

    def cinder(self, project_id: str, token: str) -> clients.Cinder:
        return clients.Cinder(self.cfg.cinder_url, project_id, token, self.service_token)

    # ---- background work -------------------------------------------------------------------
    def spawn(self, fn: Callable[..., Any], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # the task recorded its own failure; keep the thread quiet
                LOG.error("background task %s failed:\n%s", fn.__name__, traceback.format_exc())
        thread = threading.Thread(target=run, name=fn.__name__, daemon=True)
        thread.start()
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        return thread

    # ---- instance actions ------------------------------------------------------------------
    def action_start(self, server: dict, action: str, ctx: Any) -> str:
        """Record an instance action (nova.objects.InstanceAction.action_start)."""
        ts = iso_us(now())
        record = {"action": action, "instance_uuid": server["id"], "request_id": ctx.request_id,
                  "user_id": ctx.user_id, "project_id": ctx.project_id, "start_time": ts,
                  "updated_at": ts, "message": None, "events": []}
        with self.store.write() as db:
            db["actions"].setdefault(server["id"], []).append(record)
        return ctx.request_id

    def event_start(self, server_id: str, request_id: str, event: str) -> None:
        ts = iso_us(now())
        with self.store.write() as db:
            for action in db["actions"].get(server_id, []):
                if action["request_id"] == request_id:
                    action["events"].append({
                        "event": event, "start_time": ts, "finish_time": None, "result": None,
                        "traceback": None, "host": HOST, "details": None})
                    action["updated_at"] = ts

    def event_finish(self, server_id: str, request_id: str, event: str,
                     exc: BaseException | None = None) -> None:
        """Finish an event; a failure marks the event 'Error' and the action message 'Error'."""
        ts = iso_us(now())
        with self.store.write() as db:
            for action in db["actions"].get(server_id, []):
                if action["request_id"] != request_id:
                    continue
                for ev in action["events"]:
                    if ev["event"] == event and ev["finish_time"] is None:
                        ev["finish_time"] = ts
                        if exc is None:
                            ev["result"] = "Success"
                        else:
                            ev["result"] = "Error"
                            ev["traceback"] = "".join(traceback.format_exception(exc))
                            if isinstance(exc, NovaError):
                                ev["details"] = exc.message
                            action["message"] = "Error"
                action["updated_at"] = ts

    def record_fault(self, server_id: str, exc: BaseException) -> None:
        """An instance fault (shown in server show only when the server is in ERROR)."""
        code = exc.code if isinstance(exc, NovaError) else 500
        message = exc.message if isinstance(exc, NovaError) else type(exc).__name__
        if isinstance(exc, clients.UpstreamError):
            message = str(exc)
        self.store.update("servers", server_id, fault={
            "code": code, "message": message[:255], "created": iso_z(now()),
            "details": "".join(traceback.format_exception(exc))})

    def set_state(self, server_id: str, **changes: Any) -> dict | None:
        changes["updated"] = iso_z(now())
        return self.store.update("servers", server_id, **changes)

    # ---- disks -----------------------------------------------------------------------------
    def instance_dir(self, server_id: str) -> Path:
        return self.instances_dir / server_id

    def _base_lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._base_locks.setdefault(key, threading.Lock())

    def server_lock(self, server_id: str) -> threading.Lock:
        """Serializes build, power changes and delete of one server (as Nova's
        @synchronized(instance.uuid) does), so a delete during a build never leaks a guest."""
        with self._locks_lock:
            return self._server_locks.setdefault(server_id, threading.Lock())

    def fetch_base(self, image: dict, token: str) -> Path:
        """The image as a raw file in `_base/<sha1(image id)>`, downloaded once (imagecache)."""
        key = hashlib.sha1(image["id"].encode(), usedforsecurity=False).hexdigest()
        base = self.base_dir / key
        with self._base_lock(key):
            if base.exists():
                return base
            part = base.with_suffix(".part")
            self.glance(token).download(image["id"], part)
            fmt = image.get("disk_format") or "raw"
            if fmt != "raw":  # force_raw_images: the base is always raw
                conv = base.with_suffix(".converted")
                _qemu_img("convert", "-f", fmt, "-O", "raw", str(part), str(conv))
                part.unlink()
                part = conv
            part.rename(base)
        return base

    def make_root_disk(self, server: dict, image: dict, token: str) -> Path:
        """A qcow2 overlay on the cached base, grown to the flavor's root disk when larger."""
        base = self.fetch_base(image, token)
        idir = self.instance_dir(server["id"])
        idir.mkdir(parents=True, exist_ok=True)
        disk = idir / "disk"
        disk.unlink(missing_ok=True)
        _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "raw", str(disk))
        root_gb = int(server["flavor"]["disk"])
        if root_gb and root_gb * 1024**3 > base.stat().st_size:
            _qemu_img("resize", str(disk), f"{root_gb}G")
        return disk

    def disk_specs(self, server: dict) -> list[DiskSpec]:
        """The guest's disks in target order: local root (image-backed), then volumes."""
        specs: list[DiskSpec] = []
        if server.get("image_ref") and not server.get("proxy"):
            specs.append(DiskSpec(path=self.instance_dir(server["id"]) / "disk", format="qcow2",
                                  target="vda"))
        for bdm in sorted(server["bdms"], key=lambda b: b["device_name"] or ""):
            if bdm.get("device_path") or bdm.get("rbd"):
                specs.append(volume_disk_spec(bdm))
        return specs

    def guest_settings(self, server: dict) -> dict[str, Any]:
        sysmeta = server["system_metadata"]
        return {"agent_channel": _truthy(sysmeta.get("image_hw_qemu_guest_agent")),
                "fast_agent_running": sysmeta.get("image_devcloud_agent_running", "yes") != "no",
                "memory_mb": int(server["flavor"]["ram"]), "vcpus": int(server["flavor"]["vcpus"])}

    # ---- volumes (Cinder attachments API, as nova.volume.cinder does) -----------------------
    def attach_volume(self, server: dict, bdm: dict, token: str,
                      before_complete: Callable[[dict], None] | None = None) -> dict:
        """attachment create (unless the API reserved one) -> update with the connector ->
        connect (`before_complete`) -> complete; returns the updated bdm."""
        cinder = self.cinder(server["project_id"], token)
        conn = clients.connector(HOST, bdm["device_name"])
        attachment = ({"id": bdm["attachment_id"]} if bdm.get("attachment_id") else
                      cinder.attachment_create(bdm["volume_id"], server["id"]))
        updated = cinder.attachment_update(attachment["id"], conn)
        info = updated.get("connection_info") or {}
        device_path = (info.get("data") or {}).get("device_path") or info.get("device_path")
        rbd_source = None
        if rbd.is_rbd(info):
            try:
                rbd_source = rbd.source(info, self.cfg.ceph_conf)
            except rbd.RbdConnectError as exc:
                cinder.attachment_delete(attachment["id"])
                raise NovaError(f"Volume {bdm['volume_id']}: {exc}") from exc
            device_path = None
        elif not device_path:
            cinder.attachment_delete(attachment["id"])
            raise NovaError(f"Volume {bdm['volume_id']} has no local device path in its "
                            f"connection info: {info}")
        bdm = dict(bdm, attachment_id=attachment["id"], device_path=device_path,
                   rbd=rbd_source, connection_info=info)
        if before_complete is not None:
            try:
                before_complete(bdm)
            except Exception:
                cinder.attachment_delete(attachment["id"])
                raise
        cinder.attachment_complete(attachment["id"])
        return bdm

    def detach_volume(self, server: dict, bdm: dict, token: str) -> None:
        if bdm.get("attachment_id"):
            self.cinder(server["project_id"], token).attachment_delete(bdm["attachment_id"])

    # ---- build -------------------------------------------------------------------------------
    def build(self, server_id: str, request_id: str, token: str) -> None:
        """_do_build_and_run_instance: block devices, networking, spawn."""
        with self.server_lock(server_id):
            self._build(server_id, request_id, token)

    def _build(self, server_id: str, request_id: str, token: str) -> None:
        event = "compute__do_build_and_run_instance"
        self.event_start(server_id, request_id, "conductor_schedule_and_build_instances")
        self.event_finish(server_id, request_id, "conductor_schedule_and_build_instances")
        self.event_start(server_id, request_id, event)
        server = self.store.get("servers", server_id)
        if server is None or server.get("task_state") == "deleting":
            return
        try:
            if server.get("no_valid_host"):  # the scheduler found no host (server group policy)
                raise NovaError(server["no_valid_host"], 500)
            self.set_state(server_id, task_state="block_device_mapping")
            bdms = [self._prepare_bdm(server, bdm, token) for bdm in server["bdms"]]
            server = self.set_state(server_id, bdms=bdms, task_state="networking") or server
            server = self.set_state(server_id, task_state="spawning") or server
            if server.get("proxy"):
                pass  # the backup proxy has no VM: its volumes become symlinks
            else:
                if server.get("image_ref"):
                    image = self.glance(token).get(server["image_ref"])
                    if image is None:
                        raise NovaError(f"Image {server['image_ref']} could not be found.", 404)
                    self.make_root_disk(server, image, token)
                self.hypervisor.create(server_id, disks=self.disk_specs(server),
                                       **self.guest_settings(server))
            self.set_state(server_id, vm_state="active", task_state=None, power_state=RUNNING,
                           launched_at=iso_us(now()))
            if server.get("proxy"):
                for bdm in server["bdms"]:
                    self.proxy_link(bdm)
            self.event_finish(server_id, request_id, event)
        except Exception as exc:
            LOG.error("build of %s failed:\n%s", server_id, traceback.format_exc())
            self.record_fault(server_id, exc)
            self.set_state(server_id, vm_state="error", task_state=None, power_state=NOSTATE)
            self.event_finish(server_id, request_id, event, exc)

    def _prepare_bdm(self, server: dict, bdm: dict, token: str) -> dict:
        """Create the volume when the mapping asks for it (image/blank/snapshot -> volume), wait
        for it, then attach it (attachments API)."""
        if bdm["destination_type"] != "volume":
            return bdm
        cinder = self.cinder(server["project_id"], token)
        vol: dict[str, Any] | None
        if not bdm.get("volume_id"):
            vol = cinder.create_volume(
                int(bdm.get("volume_size") or 1), name="",
                image_id=bdm.get("image_id") if bdm["source_type"] == "image" else None,
                snapshot_id=bdm.get("snapshot_id") if bdm["source_type"] == "snapshot" else None,
                volume_type=bdm.get("volume_type"))
            bdm = dict(bdm, volume_id=vol["id"])
            self.store_bdm(server["id"], bdm)
            cinder.wait_volume(vol["id"], "available")
        vol = cinder.get_volume(bdm["volume_id"])
        if vol is not None and not bdm.get("volume_size"):
            bdm = dict(bdm, volume_size=vol["size"])
        bdm = self.attach_volume(server, bdm, token)
        self.store_bdm(server["id"], bdm)
        return bdm

    def store_bdm(self, server_id: str, bdm: dict) -> None:
        with self.store.write() as db:
            server = db["servers"].get(server_id)
            if server is None:
                return
            server["bdms"] = [bdm if b["uuid"] == bdm["uuid"] else b for b in server["bdms"]]

    # ---- power -------------------------------------------------------------------------------
    def stop(self, server_id: str, request_id: str) -> None:
        with self.server_lock(server_id):
            self._stop(server_id, request_id)

    def start(self, server_id: str, request_id: str) -> None:
        with self.server_lock(server_id):
            self._start(server_id, request_id)

    def _stop(self, server_id: str, request_id: str) -> None:
        event = "compute_stop_instance"
        self.event_start(server_id, request_id, event)
        try:
            server = self.store.get("servers", server_id)
            if server and not server.get("proxy"):
                self.hypervisor.stop(server_id)
            self.set_state(server_id, vm_state="stopped", task_state=None, power_state=SHUTDOWN)
            self.event_finish(server_id, request_id, event)
        except Exception as exc:
            self.set_state(server_id, task_state=None)
            self.event_finish(server_id, request_id, event, exc)

    def _start(self, server_id: str, request_id: str) -> None:
        event = "compute_start_instance"
        self.event_start(server_id, request_id, event)
        try:
            server = self.store.get("servers", server_id)
            if server and not server.get("proxy"):
                self.hypervisor.start(server_id)
            self.set_state(server_id, vm_state="active", task_state=None, power_state=RUNNING)
            self.event_finish(server_id, request_id, event)
        except Exception as exc:
            self.set_state(server_id, task_state=None)
            self.event_finish(server_id, request_id, event, exc)

    # ---- delete ------------------------------------------------------------------------------
    def delete(self, server_id: str, request_id: str, token: str,
               release_ports: Callable[[str], None]) -> None:
        """terminate_instance: destroy the guest, detach (and maybe delete) volumes, ports."""
        with self.server_lock(server_id):
            self._delete(server_id, request_id, token, release_ports)
        with self._locks_lock:
            self._server_locks.pop(server_id, None)

    def _delete(self, server_id: str, request_id: str, token: str,
                release_ports: Callable[[str], None]) -> None:
        server = self.store.get("servers", server_id)
        if server is None:
            return
        event = "compute_terminate_instance"
        self.event_start(server_id, request_id, event)
        try:
            if not server.get("proxy"):
                try:
                    self.hypervisor.destroy(server_id)
                except GuestError:
                    pass
            cinder = self.cinder(server["project_id"], token)
            for bdm in server["bdms"]:
                if bdm.get("volume_id"):
                    if server.get("proxy"):
                        self.proxy_unlink(bdm)
                    try:
                        self.detach_volume(server, bdm, token)
                        if bdm.get("delete_on_termination"):
                            cinder.wait_volume(bdm["volume_id"], "available", timeout=120)
                            cinder.delete_volume(bdm["volume_id"])
                    except Exception:
                        LOG.warning("cleaning volume %s of %s failed:\n%s", bdm["volume_id"],
                                    server_id, traceback.format_exc())
            release_ports(server_id)
            shutil.rmtree(self.instance_dir(server_id), ignore_errors=True)
            self.event_finish(server_id, request_id, event)
        except Exception as exc:
            self.event_finish(server_id, request_id, event, exc)
            LOG.error("delete of %s failed:\n%s", server_id, traceback.format_exc())
        with self.store.write() as db:
            db["servers"].pop(server_id, None)
            db["deleted_servers"][server_id] = {"id": server_id, "project_id": server["project_id"]}

    # ---- the backup proxy ----------------------------------------------------------------------
    def proxy_link(self, bdm: dict) -> None:
        """/dev/disk/by-id/virtio-<volume id[:20]> as a symlink to the volume's file; an RBD
        volume's file is its image mounted alone with rbd-fuse (see devcloud.nova.rbd)."""
        root = Path(self.cfg.proxy_device_root)
        root.mkdir(parents=True, exist_ok=True)
        if bdm.get("rbd"):
            try:
                device = rbd.fuse_attach(self.cfg.nova_dir, bdm["volume_id"], bdm["rbd"])
            except rbd.RbdConnectError as exc:
                raise NovaError(f"Volume {bdm['volume_id']}: {exc}") from exc
        else:
            device = Path(bdm["device_path"])
        link = root / f"virtio-{bdm['volume_id'][:20]}"
        link.unlink(missing_ok=True)
        link.symlink_to(device)

    def proxy_unlink(self, bdm: dict) -> None:
        (Path(self.cfg.proxy_device_root) / f"virtio-{bdm['volume_id'][:20]}").unlink(
            missing_ok=True)
        if bdm.get("rbd"):
            rbd.fuse_detach(self.cfg.nova_dir, bdm["volume_id"])


def volume_disk_spec(bdm: dict) -> DiskSpec:
    """The guest disk of an attached volume: its file, or its RBD image through QEMU's rbd
    driver; the serial is the volume id, which the guest's by-id name is made of."""
    target = bdm["device_name"].rsplit("/", 1)[-1]
    if bdm.get("rbd"):
        return DiskSpec(path=Path(rbd.display_path(bdm["rbd"])), format="raw", target=target,
                        serial=bdm["volume_id"], rbd=bdm["rbd"])
    return DiskSpec(path=Path(bdm["device_path"]), format="raw", target=target,
                    serial=bdm["volume_id"])


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("yes", "true", "1", "on", "y", "t")


def truthy(value: Any) -> bool:
    """oslo's bool_from_string as Nova applies it to image properties."""
    return _truthy(value)


def _qemu_img(*args: str) -> None:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NovaError(f"qemu-img {' '.join(args)} failed: {proc.stderr.strip()}")


def new_uuid() -> str:
    return str(uuidlib.uuid4())
