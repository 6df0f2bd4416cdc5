"""os-volume_attachments: attach and detach Cinder volumes as Nova does with the attachments API.

The API reserves the volume (attachment create without a connector) and picks the device name,
answers 200, and the compute side then updates the attachment with its connector, connects the
disk to the guest (or, on the backup proxy server, makes the /dev/disk/by-id style symlink) and
completes the attachment, which is when Cinder shows the volume `in-use`.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import Any

import webob

from devcloud.nova import clients
from devcloud.nova.compute import Compute, volume_disk_spec
from devcloud.nova.detach import unplug_with_retries
from devcloud.nova.wsgi import ApiError, Reply, RequestContext, bad_request, conflict, json_body

LOG = logging.getLogger(__name__)

ATTACH_STATES = ("active", "stopped", "paused", "suspended", "shelved", "shelved_offloaded")


class Attachments:
    def __init__(self, compute: Compute):
        self.compute = compute

    def _view(self, ctx: RequestContext, server: dict[str, Any], bdm: dict[str, Any]) -> dict:
        out: dict[str, Any] = {"serverId": server["id"], "volumeId": bdm["volume_id"],
                               "device": bdm["device_name"]}
        if not ctx.at_least("2.89"):
            out["id"] = bdm["volume_id"]
        if ctx.at_least("2.70"):
            out["tag"] = bdm.get("tag")
        if ctx.at_least("2.79"):
            out["delete_on_termination"] = bool(bdm.get("delete_on_termination"))
        if ctx.at_least("2.89"):
            out["attachment_id"] = bdm.get("attachment_id")
            out["bdm_uuid"] = bdm["uuid"]
        return out

    def list(self, ctx: RequestContext, server: dict[str, Any]) -> Reply:
        return Reply(200, {"volumeAttachments": [self._view(ctx, server, b)
                                                 for b in server["bdms"] if b.get("volume_id")]})

    def show(self, ctx: RequestContext, server: dict[str, Any], volume_id: str) -> Reply:
        bdm = next((b for b in server["bdms"] if b.get("volume_id") == volume_id), None)
        if bdm is None:
            raise ApiError(404, f"Volume {volume_id} is not attached to the instance "
                                f"{server['id']}")
        return Reply(200, {"volumeAttachment": self._view(ctx, server, bdm)})

    def _next_device(self, server: dict[str, Any]) -> str:
        used = {b["device_name"].rsplit("/", 1)[-1] for b in server["bdms"] if b["device_name"]}
        if server.get("image_ref") or server.get("proxy"):
            used.add("vda")  # the proxy VM boots from its own root disk
        for i in range(26):
            name = f"vd{chr(ord('a') + i)}"
            if name not in used:
                return f"/dev/{name}"
        raise ApiError(400, "No free disk device names for prefix 'vd'")

    def attach(self, ctx: RequestContext, req: webob.Request, server: dict[str, Any]) -> Reply:
        data = json_body(req).get("volumeAttachment")
        if not isinstance(data, dict) or "volumeId" not in data:
            raise bad_request("Invalid input for field/attribute volumeAttachment. Value: "
                              f"{data}. 'volumeId' is a required property")
        volume_id = data["volumeId"]
        if server["vm_state"] not in ATTACH_STATES or server.get("task_state") is not None:
            state, attr = ((server["task_state"], "task_state") if server.get("task_state")
                           else (server["vm_state"], "vm_state"))
            raise conflict(f"Cannot 'attach_volume' instance {server['id']} while it is in "
                           f"{attr} {state}")
        if any(b.get("volume_id") == volume_id for b in server["bdms"]):
            raise bad_request(f"Invalid volume: volume {volume_id} already attached")
        cinder = self.compute.cinder(server["project_id"], ctx.token)
        volume = cinder.get_volume(volume_id)
        if volume is None:
            raise ApiError(404, f"Volume {volume_id} could not be found.")
        device = data.get("device") or self._next_device(server)
        try:
            attachment = cinder.attachment_create(volume_id, server["id"])
        except clients.UpstreamError as exc:
            raise bad_request(f"Invalid volume: {_cinder_message(exc)}") from exc
        bdm = {"uuid": str(uuid.uuid4()), "source_type": "volume", "destination_type": "volume",
               "boot_index": None, "device_name": device, "volume_id": volume_id,
               "image_id": None, "snapshot_id": None, "volume_size": volume["size"],
               "delete_on_termination": bool(data.get("delete_on_termination", False)),
               "tag": data.get("tag"), "volume_type": volume.get("volume_type"),
               "disk_bus": "virtio", "device_type": "disk",
               "attachment_id": attachment["id"]}
        with self.compute.store.write() as db:
            db["servers"][server["id"]]["bdms"].append(bdm)
        request_id = self.compute.action_start(server, "attach_volume", ctx)
        self.compute.spawn(self._attach, server["id"], bdm, request_id, ctx.token)
        return Reply(200, {"volumeAttachment": self._view(ctx, server, bdm)})

    def _attach(self, server_id: str, bdm: dict[str, Any], request_id: str, token: str) -> None:
        c = self.compute
        event = "compute_attach_volume"
        c.event_start(server_id, request_id, event)
        server = c.store.get("servers", server_id)
        try:
            assert server is not None, server_id

            def connect(live_bdm: dict[str, Any]) -> None:
                if server.get("proxy"):
                    c.proxy_link(live_bdm)
                elif c.hypervisor.is_running(server_id) or server["vm_state"] == "stopped":
                    c.hypervisor.attach_disk(server_id, volume_disk_spec(live_bdm))
            bdm = c.attach_volume(server, bdm, token, before_complete=connect)
            c.store_bdm(server_id, bdm)
            c.event_finish(server_id, request_id, event)
        except Exception as exc:
            LOG.error("attach of %s to %s failed:\n%s", bdm["volume_id"], server_id,
                      traceback.format_exc())
            with c.store.write() as db:
                live = db["servers"].get(server_id)
                if live:
                    live["bdms"] = [b for b in live["bdms"] if b["uuid"] != bdm["uuid"]]
            try:
                c.detach_volume(server, bdm, token)  # type: ignore[arg-type]  # a server gone fails here, ignored
            except Exception:
                pass
            c.event_finish(server_id, request_id, event, exc)

    def detach(self, ctx: RequestContext, server: dict[str, Any], volume_id: str) -> Reply:
        bdm = next((b for b in server["bdms"] if b.get("volume_id") == volume_id), None)
        if bdm is None:
            raise ApiError(404, f"Volume {volume_id} is not attached to the instance "
                                f"{server['id']}")
        if bdm.get("boot_index") == 0 and not server.get("image_ref"):
            raise bad_request("Cannot detach a root device volume")
        if server.get("task_state") is not None:
            raise conflict(f"Cannot 'detach_volume' instance {server['id']} while it is in "
                           f"task_state {server['task_state']}")
        request_id = self.compute.action_start(server, "detach_volume", ctx)
        self.compute.spawn(self._detach, server["id"], bdm, request_id, ctx.token)
        return Reply(202)

    def _detach(self, server_id: str, bdm: dict[str, Any], request_id: str, token: str) -> None:
        c = self.compute
        event = "compute_detach_volume"
        c.event_start(server_id, request_id, event)
        server = c.store.get("servers", server_id)
        try:
            assert server is not None, server_id
            if server.get("proxy"):
                c.proxy_unlink(bdm)
            else:
                unplug_with_retries(c.hypervisor, server_id, bdm["device_name"].rsplit("/", 1)[-1],
                                    c.cfg.detach_attempts, c.cfg.detach_interval)
            c.detach_volume(server, bdm, token)
            with c.store.write() as db:
                live = db["servers"].get(server_id)
                if live:
                    live["bdms"] = [b for b in live["bdms"] if b["uuid"] != bdm["uuid"]]
            c.event_finish(server_id, request_id, event)
        except Exception as exc:
            c.event_finish(server_id, request_id, event, exc)


def _cinder_message(exc: clients.UpstreamError) -> str:
    try:
        body = json.loads(exc.body)
        return next(iter(body.values()))["message"]
    except Exception:
        return exc.body[:200]
