"""createImage, as nova.compute.api.snapshot / snapshot_volume_backed and the libvirt driver do it.

Image-backed: the API creates a queued Glance image and answers 202; the compute side walks
task_state image_snapshot -> image_pending_upload -> image_uploading -> None, quiescing through
the guest agent when the image has hw_qemu_guest_agent=yes, and uploads a qcow2 of the root disk.
A failure deletes the image and leaves its reason only in the instance action's event.

Volume-backed: the API itself quiesces (409 "Failed to quiesce instance: ..." when the image
requires it and the agent does not answer), forces a Cinder snapshot of every attached volume,
thaws, and creates a 0-byte image whose `block_device_mapping` property lists the snapshots.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcloud.nova import compute as comp
from devcloud.nova.compute import Compute, InstanceQuiesceFailed, NovaError, QuiesceError, truthy
from devcloud.nova.wsgi import ApiError, RequestContext

LOG = logging.getLogger(__name__)

NON_INHERITABLE = {"cinder_encryption_key_id", "cinder_encryption_key_deletion_policy",
                   "img_signature", "img_signature_hash_method", "img_signature_key_type",
                   "img_signature_certificate_uuid", "cache_in_nova", "bittorrent"}
INHERITABLE_TOP = ("min_ram", "min_disk", "disk_format", "container_format")
SKIP_KEYS = ("mappings", "block_device_mapping", "img_mappings", "img_block_device_mapping")
SNAPSHOT_STATES = ("active", "stopped", "paused", "suspended")


@dataclass(frozen=True)
class BackupRotation:
    """createBackup's `backup_type` and `rotation`: how many backups of that type to keep."""

    backup_type: str
    rotation: int

    def rotate(self, glance: Any, server_id: str) -> None:
        """ComputeManager._rotate_backups: the server's backups of this type, newest first;
        those past `rotation` are deleted (all of them, the new one too, for rotation 0)."""
        backups = [i for i in glance.list_all()
                   if i.get("instance_uuid") == server_id and i.get("image_type") == "backup"
                   and i.get("backup_type") == self.backup_type]
        backups.sort(key=lambda i: i.get("created_at") or "", reverse=True)
        for image in backups[self.rotation:]:
            LOG.info("rotating out backup %s of %s", image["id"], server_id)
            glance.delete(image["id"])


class QemuGuestAgentNotEnabled(NovaError):
    code = 400

    def __init__(self) -> None:
        super().__init__("QEMU guest agent is not enabled")


def is_volume_backed(server: dict[str, Any]) -> bool:
    return not server.get("image_ref")


def check_state(server: dict[str, Any], method: str = "createImage") -> None:
    """@check_instance_state(vm_state=[ACTIVE, STOPPED, PAUSED, SUSPENDED], task_state=[None])."""
    if server["vm_state"] not in SNAPSHOT_STATES:
        raise ApiError(409, f"Cannot '{method}' instance {server['id']} while it is in vm_state "
                            f"{server['vm_state']}")
    if server.get("task_state") is not None:
        raise ApiError(409, f"Cannot '{method}' instance {server['id']} while it is in "
                            f"task_state {server['task_state']}")


def snapshot_metadata(ctx: RequestContext, server: dict[str, Any], name: str,
                      extra: dict[str, Any]) -> dict[str, Any]:
    """initialize_instance_snapshot_metadata: image meta from the instance's system_metadata."""
    top: dict[str, Any] = {}
    props: dict[str, Any] = {}
    for key, value in server["system_metadata"].items():
        if not key.startswith("image_") or value is None:
            continue
        key = key[len("image_"):]
        if key in SKIP_KEYS:
            continue
        if key in INHERITABLE_TOP:
            top[key] = value
        else:
            props[key] = value
    for key in list(props):
        if key in NON_INHERITABLE or key.startswith("os_glance"):
            props.pop(key)
    extra = dict(extra)
    if ctx.project_id != server["project_id"]:
        top["visibility"] = "shared"
        extra["instance_owner"] = server["project_id"]
    else:
        top["visibility"] = "private"
    props.update(extra)
    top["name"] = name
    return {"top": top, "properties": props}


def glance_body(meta: dict[str, Any]) -> dict[str, Any]:
    """_translate_to_glance: properties flattened as strings; min_* as ints; no size."""
    body: dict[str, Any] = {}
    for key, value in meta["top"].items():
        body[key] = int(value) if key in ("min_ram", "min_disk") else value
    for key, value in meta["properties"].items():
        if key in ("kernel_id", "ramdisk_id") and (value is None or
                                                   str(value).strip().lower() in ("", "none")):
            continue
        if key in ("block_device_mapping", "mappings") and not isinstance(value, str):
            value = json.dumps(value)
        body[key] = value if value is None or isinstance(value, str) else str(value)
    return body


LIBVIRT_ERROR_CODES = (("Guest agent is not responding", 86), ("argument unsupported", 67),
                       ("Requested operation is not valid", 55), ("internal error", 1))


def quiesce_error(server: dict[str, Any], err: Exception) -> NovaError:
    """What LibvirtDriver._set_quiesced raises when libvirt's fsFreeze fails: an
    InstanceQuiesceFailed for an unresponsive agent, an InternalError otherwise."""
    text = str(err)
    code = next((c for prefix, c in LIBVIRT_ERROR_CODES if text.startswith(prefix)), 1)
    msg = (f"Error from libvirt while quiescing {server['instance_name']}: "
           f"[Error Code {code}] {text}")
    if code == 86:
        return InstanceQuiesceFailed(msg + ", libvirt cannot connect to the qemu-guest-agent "
                                           "inside the instance.")
    return NovaError(msg, 500)


class Snapshots:
    def __init__(self, compute: Compute):
        self.compute = compute

    # ---- image-backed ------------------------------------------------------------------------
    def create_image_backed(self, ctx: RequestContext, server: dict[str, Any], name: str,
                            extra: dict[str, Any], hang: bool,
                            backup: BackupRotation | None = None) -> str:
        """createImage, or createBackup when `backup` says which backups to keep: its image is
        of image_type `backup` and older backups of the same type beyond `rotation` go."""
        props = {"instance_uuid": server["id"], "user_id": ctx.user_id,
                 "image_type": "backup" if backup else "snapshot"}
        if backup:
            props["backup_type"] = backup.backup_type
        props.update(extra)
        meta = snapshot_metadata(ctx, server, name, props)
        meta["top"].pop("disk_format", None)
        meta["top"].pop("container_format", None)
        image = self.compute.glance(ctx.token).create(glance_body(meta))
        method = "createBackup" if backup else "createImage"
        with self.compute.store.write() as db:
            live = db["servers"].get(server["id"])
            if live is None or live.get("task_state") is not None:
                self.compute.glance(ctx.token).delete(image["id"])
                state = "deleting" if live is not None else "deleted"
                raise ApiError(409, f"Cannot '{method}' instance {server['id']} while it is "
                                    f"in task_state {state}")
            live["task_state"] = "image_backup" if backup else "image_snapshot_pending"
        request_id = self.compute.action_start(server, method, ctx)
        self.compute.spawn(self._snapshot_instance, server["id"], image["id"], request_id,
                           ctx.token, hang, backup)
        return image["id"]

    def _snapshot_instance(self, server_id: str, image_id: str, request_id: str, token: str,
                           hang: bool, backup: BackupRotation | None = None) -> None:
        """ComputeManager.snapshot_instance / backup_instance + LibvirtDriver.snapshot (live, or
        cold if off), then _rotate_backups for a backup."""
        c = self.compute
        event = "compute_backup_instance" if backup else "compute_snapshot_instance"
        c.event_start(server_id, request_id, event)
        glance = c.glance(token)
        out: Path | None = None
        try:
            server = (c.store.get("servers", server_id) if backup else
                      c.set_state(server_id, task_state="image_snapshot"))
            if server is None:
                raise NovaError(f"Instance {server_id} could not be found.", 404)
            c.set_state(server_id, task_state="image_pending_upload")
            running = server["power_state"] == comp.RUNNING and not server.get("proxy")
            out = c.instance_dir(server_id) / f"snapshot-{image_id}.qcow2"
            out.unlink(missing_ok=True)
            self._live_or_cold_snapshot(server, out, running)
            c.set_state(server_id, task_state="image_uploading")
            if hang:
                self._hang(server_id)
            sysmeta = server["system_metadata"]
            update = {"disk_format": "qcow2",
                      "container_format": sysmeta.get("image_container_format") or "bare",
                      "image_location": "snapshot", "image_state": "available",
                      "owner_id": server["project_id"]}
            if sysmeta.get("image_os_type"):
                update["os_type"] = sysmeta["image_os_type"]
            glance.update(image_id, update)
            glance.upload(image_id, out)
            c.set_state(server_id, task_state=None)
            if backup:
                backup.rotate(glance, server_id)
            c.event_finish(server_id, request_id, event)
        except Exception as exc:
            LOG.error("snapshot of %s into image %s failed: %s", server_id, image_id, exc)
            c.record_fault(server_id, exc)
            live = c.store.get("servers", server_id)
            if live is not None and live.get("task_state") != "deleting":
                c.set_state(server_id, task_state=None)  # @reverts_task_state
            c.event_finish(server_id, request_id, event, exc)
            try:  # @delete_image_on_error
                glance.delete(image_id)
            except Exception as del_exc:
                LOG.warning("could not delete image %s: %s", image_id, del_exc)
        finally:
            if out is not None:
                out.unlink(missing_ok=True)

    def _live_or_cold_snapshot(self, server: dict[str, Any], out: Path, running: bool) -> None:
        c = self.compute
        sysmeta = server["system_metadata"]
        has_agent = truthy(sysmeta.get("image_hw_qemu_guest_agent"))
        requires = truthy(sysmeta.get("image_os_require_quiesce"))
        quiesced = False
        if running:
            if not has_agent:
                if requires:  # _can_quiesce failed and os_require_quiesce is set: raise
                    raise QemuGuestAgentNotEnabled()
                LOG.info("Quiescing instance not available: QEMU guest agent is not enabled.")
            else:
                try:
                    c.hypervisor.quiesce(server["id"])
                    quiesced = True
                except QuiesceError as err:
                    _thaw(c, server["id"])
                    failure = quiesce_error(server, err)
                    if requires and c.cfg.quiesce == "strict":
                        raise failure from err
                    LOG.info("Skipping quiescing instance: %s.", failure.message)
        try:
            c.hypervisor.snapshot_disk(server["id"], "vda", out, "qcow2")
        finally:
            if quiesced:
                _thaw(c, server["id"])

    def _hang(self, server_id: str) -> None:
        """Fault `hang-snapshot`: the upload never finishes (until the server is deleted)."""
        while True:
            server = self.compute.store.get("servers", server_id)
            if server is None or server.get("task_state") == "deleting":
                break
            time.sleep(1)
        raise NovaError(f"Instance {server_id} could not be found.", 404)

    # ---- volume-backed -------------------------------------------------------------------------
    def create_volume_backed(self, ctx: RequestContext, server: dict[str, Any], name: str,
                             extra: dict[str, Any], hang: bool) -> str:
        c = self.compute
        meta = snapshot_metadata(ctx, server, name, extra)
        for key in ("container_format", "disk_format"):
            meta["top"].pop(key, None)
        props = meta["properties"]
        for key in ("block_device_mapping", "bdm_v2", "root_device_name"):
            props.pop(key, None)
        props["root_device_name"] = server["root_device_name"]
        volume_bdms = [b for b in server["bdms"] if b.get("volume_id")]
        # Nova calls Cinder with the caller's context: the Cinder endpoint of the caller's token, so an
        # admin's snapshots of another project's server are the admin project's (and its quota's).
        cinder = c.cinder(ctx.project_id, ctx.token)
        if volume_bdms:
            limits = cinder.limits()
            used, maximum = limits["totalSnapshotsUsed"], limits["maxTotalSnapshots"]
            if maximum > -1 and len(volume_bdms) + used > maximum:
                raise ApiError(403, "Quota exceeded for resources: ['snapshots']")
        quiesced = False
        if server["vm_state"] == "active":
            try:
                self._quiesce_for_volume_snapshot(server)
                quiesced = True
            except NovaError as err:
                if truthy(server["system_metadata"].get("image_os_require_quiesce")):
                    raise ApiError(err.code, err.message) from err
                LOG.info("Skipping quiescing instance: %s.", err.message)
        request_id = c.action_start(server, "createImage", ctx)
        event = "api_snapshot_instance"
        c.event_start(server["id"], request_id, event)
        mapping: list[dict[str, Any]] = []
        try:
            for bdm in volume_bdms:
                volume = cinder.get_volume(bdm["volume_id"]) or {}
                snap = cinder.create_snapshot_force(bdm["volume_id"], f"snapshot for {name}",
                                                    volume.get("description"))
                mapping.append(image_mapping(bdm, snap["id"]))
            c.event_finish(server["id"], request_id, event)
        except Exception as exc:
            c.event_finish(server["id"], request_id, event, exc)
            raise
        finally:
            if quiesced:
                _thaw(c, server["id"])
        if mapping:
            props["block_device_mapping"] = mapping
            props["bdm_v2"] = True
        body = glance_body(meta)
        body.setdefault("disk_format", "raw")  # force_activate: zero bytes can only be raw
        body.setdefault("container_format", "bare")
        glance = c.glance(ctx.token)
        image = glance.create(body)
        if not hang:
            glance.upload(image["id"], None)
        return image["id"]

    def _quiesce_for_volume_snapshot(self, server: dict[str, Any]) -> None:
        """compute_rpcapi.quiesce_instance -> LibvirtDriver.quiesce."""
        if server.get("proxy"):
            raise NovaError("Quiescing is not supported for instance "
                            f"{server['id']}.", 409)
        if not truthy(server["system_metadata"].get("image_hw_qemu_guest_agent")):
            raise QemuGuestAgentNotEnabled()
        try:
            self.compute.hypervisor.quiesce(server["id"])
        except QuiesceError as err:
            _thaw(self.compute, server["id"])
            raise quiesce_error(server, err) from err


def image_mapping(bdm: dict[str, Any], snapshot_id: str) -> dict[str, Any]:
    """block_device.snapshot_from_bdm(...).get_image_mapping()."""
    return {"source_type": "snapshot", "destination_type": "volume", "snapshot_id": snapshot_id,
            "volume_id": None, "image_id": None, "no_device": None,
            "device_name": bdm["device_name"], "boot_index": bdm.get("boot_index"),
            "delete_on_termination": bool(bdm.get("delete_on_termination")),
            "volume_size": bdm.get("volume_size"), "disk_bus": bdm.get("disk_bus") or "virtio",
            "device_type": bdm.get("device_type") or "disk", "guest_format": None,
            "tag": bdm.get("tag"), "volume_type": bdm.get("volume_type"), "encrypted": None,
            "encryption_secret_uuid": None, "encryption_format": None,
            "encryption_options": None}


def _thaw(compute: Compute, server_id: str) -> None:
    """Every path after a freeze attempt thaws; a failed thaw is logged, as Nova logs it."""
    try:
        compute.hypervisor.unquiesce(server_id)
    except Exception as exc:
        LOG.warning("unquiesce of %s failed: %s", server_id, exc)
