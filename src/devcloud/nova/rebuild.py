"""rebuild: a server re-created in place from an image, as nova.compute.api.rebuild and the
compute manager's rebuild_instance do it.

It is how a backup product restores a server in place: the server keeps its id, its ports (so its
addresses) and its attached volumes, and only its root disk is made anew from the image. The API
checks and records the request and answers 202 with the server in REBUILD (task_state
`rebuilding`); the compute side destroys the guest, makes the root disk from the new image
(`rebuild_block_device_mapping`), spawns it again (`rebuild_spawning`) and leaves it ACTIVE, or
SHUTOFF again when it was stopped, as the libvirt driver's default rebuild does.

A volume-backed server has no local root disk: below microversion 2.93 Nova refuses a different
image (400) and only re-spawns on the same volumes; from 2.93 on it re-images the root volume
through Cinder's `os-reimage` (3.68), moving the volume to a new attachment first and waiting for
Cinder's `volume-reimaged` external event, as the compute manager does.
"""

from __future__ import annotations

import logging
import secrets
import threading
import traceback
from collections.abc import Callable
from typing import Any

import webob

from devcloud.nova import validation, views
from devcloud.nova.compute import RUNNING, SHUTDOWN, Compute, NovaError, iso_us, now
from devcloud.nova.image_meta import check_image_fits_flavor, check_image_ram, image_sysmeta
from devcloud.nova.quotas import Quotas
from devcloud.nova.wsgi import ApiError, Reply, RequestContext, bad_request, conflict

LOG = logging.getLogger(__name__)

#: @check_instance_state(vm_state=[ACTIVE, STOPPED, ERROR]) on compute.api.rebuild: an operator
#: rebuilds a server that went to ERROR to get it back.
REBUILD_STATES = ("active", "stopped", "error")
#: The microversion from which a volume-backed server's root volume is re-imaged.
REIMAGE_BOOT_VOLUME = "2.93"
#: How long the compute side waits for Cinder's `volume-reimaged` event (Nova's
#: reimage_timeout_per_gb is 20 s per GiB; the dev cloud's volumes are small).
REIMAGE_TIMEOUT = 300.0


class ExternalEvents:
    """Events other services send Nova (os-server-external-events) that a compute task waits
    for, as ComputeVirtAPI.wait_for_instance_event: register before triggering, then wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, str, str], tuple[threading.Event, list[str]]] = {}

    def expect(self, server_id: str, name: str, tag: str) -> Callable[[float], str]:
        """Register interest; returns a wait(timeout) giving the event's status."""
        key = (server_id, name, tag)
        event, status = threading.Event(), list[str]()
        with self._lock:
            self._waiting[key] = (event, status)

        def wait(timeout: float) -> str:
            try:
                if not event.wait(timeout):
                    raise NovaError(f"Timeout waiting for {name} event of {tag} on instance "
                                    f"{server_id}")
                return status[0]
            finally:
                with self._lock:
                    self._waiting.pop(key, None)
        return wait

    def deliver(self, server_id: str, name: str, tag: str, status: str) -> bool:
        """True when a task was waiting for this event."""
        with self._lock:
            waiting = self._waiting.get((server_id, name, tag or ""))
        if waiting is None:
            return False
        waiting[1].append(status)
        waiting[0].set()
        return True


class Rebuild:
    """The `rebuild` server action; `image_of(glance, id)` is the API's image lookup and
    `addresses(server_id)` the server's addresses, both shared with create."""

    def __init__(self, compute: Compute, image_of: Callable[[Any, str], dict[str, Any]],
                 addresses: Callable[[str], dict[str, Any]], events: ExternalEvents,
                 quotas: Quotas):
        self.compute = compute
        self.quotas = quotas
        self.image_of = image_of
        self.addresses = addresses
        self.events = events

    # ---- API -------------------------------------------------------------------------------
    def action(self, ctx: RequestContext, req: webob.Request, server: dict[str, Any],
               arg: Any) -> Reply:
        data = self._validated(ctx, arg)
        if server["vm_state"] not in REBUILD_STATES or server.get("task_state") is not None:
            state, attr = ((server["task_state"], "task_state") if server.get("task_state")
                           else (server["vm_state"], "vm_state"))
            raise conflict(f"Cannot 'rebuild' instance {server['id']} while it is in {attr} "
                           f"{state}")
        image_id = str(data["imageRef"]).rstrip("/").rsplit("/", 1)[-1]
        try:
            image = self.image_of(self.compute.glance(ctx.token), image_id)
        except ApiError as exc:
            if "Can not find" in exc.message:
                raise bad_request("Cannot find image for rebuild") from exc
            raise
        flavor = server["flavor"]
        volume_backed = not server.get("image_ref") and not server.get("proxy")
        reimage = False
        if volume_backed:
            root = self._root_bdm(server)
            if image_id != self._volume_image_id(ctx, root):
                if not ctx.at_least(REIMAGE_BOOT_VOLUME):
                    raise bad_request(f"Image {image_id} is unacceptable: Unable to rebuild with "
                                      "a different image for a volume-backed server.")
                reimage = True
                if int(image.get("min_disk") or 0) > int(root.get("volume_size") or 0):
                    raise bad_request(f"Image {image_id} is unacceptable: Image min_disk is "
                                      "larger than the root volume.")
            check_image_ram(image, flavor)
        else:
            check_image_fits_flavor(image, flavor)
        changes = self._changes(ctx, server, data)

        sysmeta = {k: v for k, v in server["system_metadata"].items()
                   if not k.startswith("image_")}
        sysmeta.update(image_sysmeta(image, flavor))
        sysmeta["image_base_image_ref"] = "" if volume_backed else image_id
        changes.update(system_metadata=sysmeta, task_state="rebuilding", fault=None,
                       image_ref="" if volume_backed else image_id)
        request_id = self.compute.action_start(server, "rebuild", ctx)
        updated = self.compute.set_state(server["id"], **changes) or server
        self.compute.spawn(self.run, server["id"], request_id, ctx.token, image, server["vm_state"],
                           reimage)
        out = views.server_update(ctx, updated, self.addresses(server["id"]))
        if ctx.at_least("2.54") and not ctx.at_least("2.75"):  # show_keypair
            out["key_name"] = updated.get("key_name")
        if ctx.at_least("2.71") and not ctx.at_least("2.75"):  # show_server_groups
            out["server_groups"] = [updated["server_group"]] if updated.get("server_group") else []
        if ctx.at_least("2.57"):  # as `user_data`, not the view's OS-EXT-SRV-ATTR:user_data
            out.pop("OS-EXT-SRV-ATTR:user_data", None)
            out["user_data"] = updated.get("user_data")
        out["adminPass"] = data.get("adminPass") or secrets.token_urlsafe(9)
        return Reply(202, {"server": out})

    def _validated(self, ctx: RequestContext, arg: Any) -> dict[str, Any]:
        """Nova's rebuild schemas (servers.base_rebuild and its microversion variants)."""
        if not isinstance(arg, dict):
            raise validation.invalid("rebuild", arg, f"{arg!r} is not of type 'object'")
        allowed = {"name", "imageRef", "adminPass", "metadata", "preserve_ephemeral",
                   "OS-DCF:diskConfig", "accessIPv4", "accessIPv6"}
        if not ctx.at_least("2.57"):
            allowed.add("personality")
        for key, version in (("description", "2.19"), ("key_name", "2.54"),
                             ("user_data", "2.57"), ("trusted_image_certificates", "2.63"),
                             ("hostname", "2.90")):
            if ctx.at_least(version):
                allowed.add(key)
        extra = sorted(set(arg) - allowed)
        if extra:
            raise validation.invalid("rebuild", arg, "Additional properties are not allowed "
                                     f"({', '.join(repr(k) for k in extra)} "
                                     f"{'was' if len(extra) == 1 else 'were'} unexpected)")
        if "imageRef" not in arg:
            raise validation.invalid("rebuild", arg, "'imageRef' is a required property")
        if not isinstance(arg["imageRef"], str) or not arg["imageRef"].strip():
            raise validation.invalid("rebuild/imageRef", arg["imageRef"],
                                     f"{arg['imageRef']!r} is not a 'uuid'")
        if "name" in arg:
            validation.name("rebuild/name", arg["name"])
        if "metadata" in arg:
            validation.metadata("rebuild/metadata", arg["metadata"])
        if "adminPass" in arg and not isinstance(arg["adminPass"], str):
            raise validation.invalid("rebuild/adminPass", arg["adminPass"],
                                     f"{arg['adminPass']!r} is not of type 'string'")
        if "preserve_ephemeral" in arg:  # no ephemeral disks here: only checked
            validation.boolean("rebuild/preserve_ephemeral", arg["preserve_ephemeral"])
        description = arg.get("description")
        if description is not None and (not isinstance(description, str)
                                        or len(description) > validation.MAX_LENGTH):
            raise validation.invalid("rebuild/description", description,
                                     f"{description!r} is not a string of at most 255 characters")
        return arg

    def _changes(self, ctx: RequestContext, server: dict[str, Any],
                 data: dict[str, Any]) -> dict[str, Any]:
        """What the request sets on the instance besides the image (the API saves it at once)."""
        changes: dict[str, Any] = {}
        if "name" in data:
            changes["name"] = data["name"]
        if "metadata" in data:
            self.quotas.check_metadata(server["project_id"], data["metadata"])
            changes["metadata"] = dict(data["metadata"])
        if "accessIPv4" in data:
            changes["access_ipv4"] = validation.access_ip("accessIPv4", data["accessIPv4"], 4)
        if "accessIPv6" in data:
            changes["access_ipv6"] = validation.access_ip("accessIPv6", data["accessIPv6"], 6)
        if "description" in data:
            changes["description"] = data["description"]
        if "key_name" in data:
            key_name = data["key_name"]
            if key_name is not None and self.compute.store.get(
                    "keypairs", f"{ctx.user_id}/{key_name}") is None:
                raise bad_request("Invalid key_name provided.")
            changes["key_name"] = key_name
        if "user_data" in data:
            changes["user_data"] = data["user_data"]
        if "hostname" in data:
            changes["hostname"] = data["hostname"]
        return changes

    @staticmethod
    def _root_bdm(server: dict[str, Any]) -> dict[str, Any]:
        root = next((b for b in server["bdms"] if b.get("boot_index") == 0), None)
        if root is None or not root.get("volume_id"):
            raise ApiError(500, f"Instance {server['id']} has no root volume to rebuild")
        return root

    def _volume_image_id(self, ctx: RequestContext, root: dict[str, Any]) -> str | None:
        """The image the root volume was made from (its volume_image_metadata), as Nova reads it."""
        volume = self.compute.cinder(ctx.project_id, ctx.token).get_volume(root["volume_id"])
        return ((volume or {}).get("volume_image_metadata") or {}).get("image_id")

    # ---- compute ---------------------------------------------------------------------------
    def run(self, server_id: str, request_id: str, token: str, image: dict[str, Any],
            orig_vm_state: str, reimage: bool) -> None:
        with self.compute.server_lock(server_id):
            self._run(server_id, request_id, token, image, orig_vm_state, reimage)

    def _run(self, server_id: str, request_id: str, token: str, image: dict[str, Any],
             orig_vm_state: str, reimage: bool) -> None:
        c = self.compute
        event = "compute_rebuild_instance"
        c.event_start(server_id, request_id, event)
        server = c.store.get("servers", server_id)
        if server is None or server.get("task_state") != "rebuilding":
            return  # deleted meanwhile
        try:
            if not server.get("proxy"):
                c.hypervisor.destroy(server_id)
            server = c.set_state(server_id, task_state="rebuild_block_device_mapping") or server
            if reimage:
                server = self._reimage_root_volume(server, image, token)
            if server.get("image_ref"):
                c.make_root_disk(server, image, token)
            server = c.set_state(server_id, task_state="rebuild_spawning") or server
            if not server.get("proxy"):
                c.hypervisor.create(server_id, disks=c.disk_specs(server),
                                    **c.guest_settings(server))
            if orig_vm_state == "stopped":
                # _do_rebuild_instance: a server that was stopped is powered off again.
                if not server.get("proxy"):
                    c.hypervisor.stop(server_id)
                c.set_state(server_id, vm_state="stopped", task_state=None,
                            power_state=SHUTDOWN, launched_at=iso_us(now()))
            else:
                c.set_state(server_id, vm_state="active", task_state=None, power_state=RUNNING,
                            launched_at=iso_us(now()))
            c.event_finish(server_id, request_id, event)
        except Exception as exc:
            LOG.error("rebuild of %s failed:\n%s", server_id, traceback.format_exc())
            c.record_fault(server_id, exc)
            c.set_state(server_id, vm_state="error", task_state=None)
            c.event_finish(server_id, request_id, event, exc)

    def _reimage_root_volume(self, server: dict[str, Any], image: dict[str, Any],
                             token: str) -> dict[str, Any]:
        """_rebuild_volume_backed_instance: a new attachment reserves the root volume, the old
        one goes, Cinder re-images the volume, and spawn attaches it through the new one."""
        c = self.compute
        root = self._root_bdm(server)
        cinder = c.cinder(server["project_id"], token)
        new_attachment = cinder.attachment_create(root["volume_id"], server["id"])
        if root.get("attachment_id"):
            cinder.attachment_delete(root["attachment_id"])
        wait = self.events.expect(server["id"], "volume-reimaged", root["volume_id"])
        cinder.reimage(root["volume_id"], image["id"])
        status = wait(REIMAGE_TIMEOUT)
        if status != "completed":
            raise NovaError(f"Volume {root['volume_id']} re-image failed ({status})")
        bdm = c.attach_volume(server, dict(root, attachment_id=new_attachment["id"],
                                           image_id=image["id"]), token)
        c.store_bdm(server["id"], bdm)
        return c.store.get("servers", server["id"]) or server
