"""/servers and its sub-resources (actions, metadata, tags, instance actions, attachments)."""

from __future__ import annotations

import builtins
import re
import secrets
import uuid
from typing import Any

import webob

from devcloud.nova import validation, views
from devcloud.nova.attachments import Attachments
from devcloud.nova.compute import HOST, Compute, NovaError, host_id, iso_z, new_uuid, now
from devcloud.nova.image_meta import check_image_fits_flavor, image_block_device_mapping, image_sysmeta
from devcloud.nova.neutron import Networking
from devcloud.nova.quotas import Quotas
from devcloud.nova.rebuild import ExternalEvents, Rebuild
from devcloud.nova.server_groups import ServerGroups
from devcloud.nova.snapshots import BackupRotation, Snapshots, check_state, is_volume_backed
from devcloud.nova.wsgi import ApiError, Reply, RequestContext, Router, bad_request, conflict, json_body, not_found

MAX_METADATA_ITEMS = 128
MAX_TAGS = 50
#: Actions the compute API refuses on a locked server (its check_instance_lock) unless the caller
#: is an admin. createImage is not one: a server locked during its backup can still be snapshot.
LOCK_CHECKED_ACTIONS = {"os-start", "os-stop", "reboot", "rebuild"}
#: oslo.utils' bool_from_string(strict=True) spellings, which Nova's is_all_tenants uses.
TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")


def _counts(data: dict[str, Any]) -> tuple[int, int]:
    """min_count/max_count (parameter_types.positive_integer: >= 1, an integer or its digits)."""
    counts = []
    for key in ("min_count", "max_count"):
        value = data.get(key, 1)
        if isinstance(value, bool) or not ((isinstance(value, int) and value >= 1) or (
                isinstance(value, str) and value.isdigit() and int(value) >= 1)):
            raise validation.invalid(f"server/{key}", value,
                                     f"{value!r} is not a positive integer")
        counts.append(int(value))
    min_count, max_count = counts
    if "max_count" not in data:
        max_count = min_count
    if min_count > max_count:
        raise bad_request("min_count must be <= max_count")
    return min_count, max_count


def _all_tenants(query: webob.multidict.MultiDict) -> bool:
    """nova.api.openstack.common.is_all_tenants: present and empty means yes; junk is a 400."""
    if "all_tenants" not in query:
        return False
    value = query["all_tenants"].strip().lower()
    if not value or value in TRUE_STRINGS:
        return True
    if value in FALSE_STRINGS:
        return False
    raise bad_request(f"Unrecognized value '{query['all_tenants']}', acceptable values are: "
                      f"{', '.join(repr(v) for v in sorted(TRUE_STRINGS + FALSE_STRINGS))}")


class ServersApi:
    def __init__(self, compute: Compute, net: Networking, faults: Any):
        self.compute = compute
        self.store = compute.store
        self.net = net
        self.faults = faults
        self.snapshots = Snapshots(compute)
        self.attachments = Attachments(compute)
        self.events = ExternalEvents()
        self.quotas = Quotas(self.store)
        self.server_groups = ServerGroups(self.store)
        self.rebuild = Rebuild(compute, self._image, net.addresses, self.events, self.quotas)

    # ---- helpers -----------------------------------------------------------------------------
    def get_server(self, ctx: RequestContext, server_id: str) -> dict[str, Any]:
        server = self.store.get("servers", server_id)
        if server is None or (server["project_id"] != ctx.project_id and not ctx.is_admin):
            raise not_found(f"Instance {server_id} could not be found.")
        return server

    def fault(self, req: webob.Request) -> Any:
        return self.faults(req.method, req.path_info) if self.faults else None

    def detail(self, ctx: RequestContext, server: dict[str, Any], show: bool = False) -> dict:
        return views.server_detail(ctx, server, self.net.addresses(server["id"]), show=show)

    # ---- list / show -------------------------------------------------------------------------
    def _visible(self, ctx: RequestContext, req: webob.Request) -> list[dict[str, Any]]:
        q = req.GET
        servers = self.store.values("servers")
        if ctx.is_admin and _all_tenants(q):
            # compute API get_all: tenant_id is another name for project_id, both admin filters
            project = q.get("project_id") or q.get("tenant_id")
            if project:
                servers = [s for s in servers if s["project_id"] == project]
        else:  # without all_tenants Nova lists the caller's project, whatever the filters say
            servers = [s for s in servers if s["project_id"] == ctx.project_id]
        if ctx.is_admin and q.get("host"):
            servers = [s for s in servers if q["host"] == HOST]
        if q.get("ip"):
            rx = re.compile(q["ip"])
            servers = [s for s in servers if any(
                rx.match(a["addr"]) for addrs in self.net.addresses(s["id"]).values()
                for a in addrs)]
        if q.get("name"):
            rx = re.compile(q["name"])
            servers = [s for s in servers if rx.search(s["name"])]
        if q.get("status"):
            wanted = {v.upper() for v in q.getall("status")}
            servers = [s for s in servers if views.status(s) in wanted]
        if q.get("image"):
            servers = [s for s in servers if s.get("image_ref") == q["image"]]
        if q.get("flavor"):
            servers = [s for s in servers if s["flavor"]["id"] == q["flavor"]]
        if q.get("tags"):
            need = set(q["tags"].split(","))
            servers = [s for s in servers if need <= set(s["tags"])]
        if q.get("tags-any"):
            anyt = set(q["tags-any"].split(","))
            servers = [s for s in servers if anyt & set(s["tags"])]
        if q.get("not-tags"):
            nt = set(q["not-tags"].split(","))
            servers = [s for s in servers if not nt <= set(s["tags"])]
        for param in ("changes-since", "changes-before"):
            validation.timestamp(param, q.get(param))
        if q.get("changes-since"):
            servers = [s for s in servers if s["updated"] >= q["changes-since"][:19]]
        servers.sort(key=lambda s: (s["created"], s["id"]), reverse=True)
        return validation.page(servers, q, key=lambda s: s["id"])

    def list(self, ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"servers": [views.server_brief(ctx, s)
                                       for s in self._visible(ctx, req)]})

    def list_detail(self, ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"servers": [self.detail(ctx, s) for s in self._visible(ctx, req)]})

    def show(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        return Reply(200, {"server": self.detail(ctx, self.get_server(ctx, server_id), True)})

    # ---- create ------------------------------------------------------------------------------
    def create(self, ctx: RequestContext, req: webob.Request) -> Reply:
        body = json_body(req)
        data = body.get("server")
        if not isinstance(data, dict):
            raise bad_request("Invalid input for field/attribute server. Value: None. "
                              "None is not of type 'object'")
        rule = self.fault(req)
        if rule is not None and rule.kind == "quota-exceeded":
            raise ApiError(403, "Quota exceeded for instances: Requested 1, but already used 10 "
                                "of 10 instances")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("Invalid input for field/attribute name. Value: "
                              f"{name}. '{name}' does not match '^(?! )[a-zA-Z0-9. _-]+(?<! )$'"
                              if name is not None else
                              "Invalid input for field/attribute server. Value: "
                              f"{data}. 'name' is a required property")
        validation.name("name", name)
        if "flavorRef" not in data:
            raise bad_request(f"Invalid input for field/attribute server. Value: {data}. "
                              "'flavorRef' is a required property")
        flavor_ref = str(data["flavorRef"]).rstrip("/").rsplit("/", 1)[-1]
        flavor = self.store.get("flavors", flavor_ref) or next(
            (f for f in self.store.values("flavors") if f["name"] == flavor_ref), None)
        if flavor is None:
            raise bad_request("Invalid flavorRef provided.")
        networks = data.get("networks")
        if networks is None and ctx.at_least("2.37"):
            raise bad_request(f"Invalid input for field/attribute server. Value: {data}. "
                              "'networks' is a required property")
        key_name = data.get("key_name")
        if key_name is not None:
            keys = self.store.get("keypairs", f"{ctx.user_id}/{key_name}")
            if keys is None:
                raise bad_request("Invalid key_name provided.")
        proxy = name == self.compute.cfg.proxy_server_name
        image_ref = str(data.get("imageRef") or "").rstrip("/").rsplit("/", 1)[-1]
        glance = self.compute.glance(ctx.token)
        image_bdms: list[dict[str, Any]] = []
        snapshot_image: dict[str, Any] | None = None
        if image_ref:
            snapshot_image = self._image(glance, image_ref)
            image_bdms = image_block_device_mapping(snapshot_image)
            if image_bdms:  # a volume-backed snapshot: boot from volumes made of its snapshots
                asked = [b for b in data.get("block_device_mapping_v2") or []
                         if not (b.get("source_type") == "image" and
                                 b.get("destination_type", "local") == "local")]
                data = dict(data, block_device_mapping_v2=image_bdms + asked)
                image_ref = ""
        bdms = self._bdms(data, image_ref)
        sysmeta: dict[str, Any] = {}
        boot_bdm = next((b for b in bdms if b.get("boot_index") == 0), None)
        if boot_bdm is not None and boot_bdm["destination_type"] == "volume":
            image_ref_for_instance = ""
            if boot_bdm["source_type"] == "image":
                image = self._image(glance, boot_bdm["image_id"])
                sysmeta = image_sysmeta(image, flavor)
                if not boot_bdm.get("volume_size"):
                    raise bad_request("Images with destination_type 'volume' need to have a "
                                      "non-zero size specified")
            elif boot_bdm["source_type"] == "snapshot" and snapshot_image is not None:
                sysmeta = image_sysmeta(snapshot_image, flavor)
            elif boot_bdm["source_type"] == "volume":
                vol = self.compute.cinder(ctx.project_id, ctx.token).get_volume(
                    boot_bdm["volume_id"])
                if vol is None:
                    raise bad_request(f"Block Device Mapping is Invalid: failed to get volume "
                                      f"{boot_bdm['volume_id']}.")
                if vol["status"] != "available":
                    raise bad_request(f"Invalid volume: volume '{vol['id']}' status must be "
                                      f"'available'. Currently in '{vol['status']}'")
                if vol.get("bootable") not in (True, "true"):
                    raise bad_request(f"Block Device {vol['id']} is not bootable.")
                vim = dict(vol.get("volume_image_metadata") or {})
                sysmeta = image_sysmeta(vim, flavor)
                boot_bdm["volume_size"] = vol["size"]
        elif image_ref:
            image = self._image(glance, image_ref)
            image_ref_for_instance = image_ref
            sysmeta = image_sysmeta(image, flavor)
            check_image_fits_flavor(image, flavor)
        elif proxy:
            image_ref_for_instance = ""
        else:
            raise bad_request("Block Device Mapping is Invalid: Boot sequence for the instance "
                              "and image/block device mapping combination is not valid.")
        if proxy:
            image_ref_for_instance = ""
        sysmeta.setdefault("image_base_image_ref", image_ref_for_instance)
        sysmeta.update({"owner_project_name": ctx.project_name, "owner_user_name": ctx.user_name})
        metadata = validation.metadata("server/metadata", data.get("metadata") or {})
        access_ipv4 = validation.access_ip("accessIPv4", data.get("accessIPv4"), 4)
        access_ipv6 = validation.access_ip("accessIPv6", data.get("accessIPv6"), 6)
        self.quotas.check_metadata(ctx.project_id, metadata)
        min_count, max_count = _counts(data)
        if max_count > 1 and isinstance(networks, list) and any(
                isinstance(n, dict) and (n.get("port") or n.get("fixed_ip")) for n in networks):
            raise bad_request("Multiple instances cannot be created with a port or a fixed IP")
        count = (max_count if proxy else
                 self.quotas.instances_allowed(ctx.project_id, flavor, min_count, max_count))
        hints = body.get("os:scheduler_hints") or {}
        group_id = hints.get("group") if isinstance(hints, dict) else None
        if group_id and self.store.get("server_groups", str(group_id)) is None:
            raise bad_request(f"Instance group {group_id} could not be found.")
        reservation_id = "r-" + secrets.token_hex(4)
        sg_names = [g.get("name", "default") for g in data.get("security_groups") or
                    [{"name": "default"}]]
        missing = [g for g in sg_names if not self.net.security_group_exists(ctx, g)]
        if missing:
            raise bad_request(f"Security group {missing[0]} not found for project "
                              f"{ctx.project_id}.")
        first: dict[str, Any] = {}
        for index in range(count):
            # multi_instance_display_name_template '%(name)s-%(count)d' when more than one
            instance_name = f"{name}-{index + 1}" if count > 1 else name
            server = self._new_server(ctx, data, body, instance_name, flavor, networks,
                                      image_ref_for_instance, key_name, metadata, sysmeta,
                                      access_ipv4, access_ipv6, sg_names, bdms, proxy,
                                      reservation_id, index, group_id)
            first = first or server
        if validation.boolean("server/return_reservation_id",
                              data.get("return_reservation_id", False)):
            return Reply(202, {"reservation_id": reservation_id})
        out: dict[str, Any] = {"id": first["id"], "links": views.links(ctx, "servers", first["id"]),
                               "OS-DCF:diskConfig": "MANUAL",
                               "security_groups": [{"name": n} for n in sg_names]}
        out["adminPass"] = data.get("adminPass") or secrets.token_urlsafe(9)
        return Reply(202, {"server": out},
                     {"Location": f"{ctx.host_url}/v2.1/servers/{first['id']}"})

    def _new_server(self, ctx: RequestContext, data: dict[str, Any], body: dict[str, Any],
                    name: str, flavor: dict[str, Any], networks: Any, image_ref: str,
                    key_name: str | None, metadata: dict[str, Any], sysmeta: dict[str, Any],
                    access_ipv4: str, access_ipv6: str, sg_names: builtins.list[str],
                    bdms: builtins.list[dict[str, Any]], proxy: bool, reservation_id: str,
                    launch_index: int, group_id: str | None) -> dict[str, Any]:
        """One instance of a create request: recorded, its ports made, its build started."""
        server_id = new_uuid()
        with self.store.write() as db:
            counter = db["meta"].get("instance_counter", 0) + 1
            db["meta"]["instance_counter"] = counter
        ports = self._ports(ctx, server_id, networks)
        ts = now()
        server = {
            "id": server_id, "name": name, "project_id": ctx.project_id, "user_id": ctx.user_id,
            "created": iso_z(ts), "updated": iso_z(ts), "launched_at": None,
            "vm_state": "building", "task_state": "scheduling", "power_state": 0,
            "flavor": flavor, "image_ref": image_ref, "key_name": key_name,
            "metadata": {str(k): str(v) for k, v in metadata.items()},
            "tags": list(data.get("tags") or []) if ctx.at_least("2.52") else [],
            "system_metadata": dict(sysmeta), "description": data.get("description"),
            "hostname": re.sub(r"[^a-z0-9-]", "-", name.lower())[:63].strip("-") or "server",
            "availability_zone": data.get("availability_zone") or "nova",
            "config_drive": "True" if data.get("config_drive") else "",
            "user_data": data.get("user_data"), "access_ipv4": access_ipv4,
            "access_ipv6": access_ipv6, "security_groups": sg_names,
            "bdms": [dict(b, uuid=new_uuid()) for b in bdms], "ports": ports["created"],
            "root_device_name": "/dev/vda",
            "fault": None, "proxy": proxy, "locked": False, "locked_reason": None,
            "instance_name": f"instance-{counter:08x}",
            "reservation_id": reservation_id, "launch_index": launch_index,
            "scheduler_hints": body.get("os:scheduler_hints") or {},
            "server_group": group_id,
            "no_valid_host": group_id and self.server_groups.join(ctx, group_id, server_id),
        }
        with self.store.write() as db:
            db["servers"][server_id] = server
        request_id = self.compute.action_start(server, "create", ctx)
        self.compute.spawn(self.compute.build, server_id, request_id, ctx.token)
        return server

    def _image(self, glance: Any, image_id: str) -> dict[str, Any]:
        image = glance.get(image_id)
        if image is None:
            raise bad_request("Can not find requested image")
        if image["status"] != "active":
            raise bad_request(f"Image {image_id} is not active.")
        return image

    def _bdms(self, data: dict[str, Any], image_ref: str) -> builtins.list[dict[str, Any]]:
        """Block device mappings v2 (and the image's implicit root disk)."""
        raw = data.get("block_device_mapping_v2") or []
        out = []
        used = set()
        for item in raw:
            src = item.get("source_type")
            dst = item.get("destination_type", "volume" if src in ("volume", "snapshot")
                           else "local")
            if src not in ("image", "volume", "snapshot", "blank"):
                raise bad_request(f"Invalid input for field/attribute source_type. Value: {src}.")
            if dst not in ("local", "volume"):  # the schema's enum
                raise validation.invalid("destination_type", dst,
                                         f"{dst!r} is not one of ['local', 'volume']")
            boot_index = item.get("boot_index")
            boot_index = int(boot_index) if boot_index not in (None, "", "none") else None
            if src == "image" and dst == "local":
                continue  # the image's own root disk
            bdm = {"uuid": str(uuid.uuid4()), "source_type": src, "destination_type": dst,
                   "boot_index": boot_index, "device_name": item.get("device_name"),
                   "volume_id": item.get("uuid") if src == "volume" else None,
                   "image_id": item.get("uuid") if src == "image" else None,
                   "snapshot_id": item.get("uuid") if src == "snapshot" else None,
                   "volume_size": item.get("volume_size"),
                   "delete_on_termination": bool(item.get("delete_on_termination", False)),
                   "tag": item.get("tag"), "volume_type": item.get("volume_type"),
                   "disk_bus": item.get("disk_bus") or "virtio",
                   "device_type": item.get("device_type") or "disk", "attachment_id": None}
            out.append(bdm)
        out.sort(key=lambda b: (b["boot_index"] is None or b["boot_index"] < 0,
                                b["boot_index"] or 0))
        first_letter = 1 if image_ref else 0
        for bdm in out:
            if bdm["device_name"]:
                used.add(bdm["device_name"].rsplit("/", 1)[-1])
        letter = first_letter
        for bdm in out:
            if not bdm["device_name"]:
                while f"vd{chr(ord('a') + letter)}" in used:
                    letter += 1
                bdm["device_name"] = f"/dev/vd{chr(ord('a') + letter)}"
                used.add(bdm["device_name"][5:])
        return out

    def _ports(self, ctx: RequestContext, server_id: str, networks: Any) -> dict[str, builtins.list[str]]:
        created: list[str] = []
        if networks == "none":
            return {"created": created}
        requested = networks if isinstance(networks, list) else [{}]
        for item in requested:
            if item.get("port"):
                self.net.bind_port(item["port"], server_id)
                continue
            net_id = item.get("uuid")
            if not net_id:
                visible = [n for n in self.store.values("networks") if self.net.visible(ctx, n)]
                if not visible:
                    raise bad_request("Unable to automatically allocate a network for project "
                                      f"{ctx.project_id}")
                own = [n for n in visible if n["project_id"] == ctx.project_id]
                net_id = (own or visible)[0]["id"]
            elif self.store.get("networks", net_id) is None:
                raise bad_request(f"Network {net_id} could not be found.")
            body: dict[str, Any] = {"network_id": net_id, "device_id": server_id,
                                    "device_owner": "compute:nova"}
            if item.get("fixed_ip"):
                body["fixed_ips"] = [{"ip_address": item["fixed_ip"]}]
            created.append(self.net.create_port(ctx.project_id, body)["id"])
        return {"created": created}

    # ---- update / delete ---------------------------------------------------------------------
    def update(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        server = self.get_server(ctx, server_id)
        data = json_body(req).get("server") or {}
        changes = {k: data[k] for k in ("name", "description") if k in data}
        if "name" in changes:
            validation.name("name", changes["name"])
        if "accessIPv4" in data:
            changes["access_ipv4"] = validation.access_ip("accessIPv4", data["accessIPv4"], 4)
        if "accessIPv6" in data:
            changes["access_ipv6"] = validation.access_ip("accessIPv6", data["accessIPv6"], 6)
        server = self.compute.set_state(server_id, **changes) or server
        return Reply(200, {"server": views.server_update(ctx, server,
                                                         self.net.addresses(server_id))})

    def delete(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        server = self.get_server(ctx, server_id)
        if server.get("locked") and not ctx.is_admin:
            raise conflict(f"Instance {server_id} is locked")
        self.compute.set_state(server_id, task_state="deleting")
        request_id = self.compute.action_start(server, "delete", ctx)
        created = set(server.get("ports", []))
        self.server_groups.leave(server_id)
        self.compute.spawn(self.compute.delete, server_id, request_id, ctx.token,
                           lambda sid: self.net.release_server_ports(sid, created))
        return Reply(204)

    # ---- actions -----------------------------------------------------------------------------
    def action(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        body = json_body(req)
        server = self.get_server(ctx, server_id)
        if len(body) != 1:
            raise bad_request("There is no such action: " + ",".join(body) if body else
                              "Malformed request body")
        name, arg = next(iter(body.items()))
        handler = {"os-start": self._start, "os-stop": self._stop,
                   "createImage": self._create_image, "reboot": self._reboot,
                   "lock": self._lock, "unlock": self._unlock,
                   "os-resetState": self._reset_state, "rebuild": self.rebuild.action,
                   "createBackup": self._create_backup,
                   "addSecurityGroup": self._add_security_group,
                   "removeSecurityGroup": self._remove_security_group,
                   "injectNetworkInfo": self._inject_network_info}.get(name)
        if handler is None:
            raise ApiError(400, f"There is no such action: {name}")
        if server.get("locked") and not ctx.is_admin and name in LOCK_CHECKED_ACTIONS:
            raise conflict(f"Instance {server_id} is locked")
        return handler(ctx, req, server, arg)

    def _lock(self, ctx: RequestContext, req: webob.Request, server: dict, arg: Any) -> Reply:
        """lock (2.73: with a `locked_reason`); locked by `admin` when not by its own project,
        which its owner then cannot unlock."""
        reason = arg.get("locked_reason") if isinstance(arg, dict) else None
        if reason is not None and (not ctx.at_least("2.73") or not isinstance(reason, str)
                                   or len(reason) > validation.MAX_LENGTH):
            raise validation.invalid("lock/locked_reason", reason, "not allowed here")
        self.compute.action_start(server, "lock", ctx)
        self.compute.set_state(
            server["id"], locked=True, locked_reason=reason,
            locked_by="owner" if server["project_id"] == ctx.project_id else "admin")
        return Reply(202)

    def _security_group_name(self, ctx: RequestContext, action: str, arg: Any) -> str:
        name = arg.get("name") if isinstance(arg, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise validation.invalid(f"{action}/name", name, f"{name!r} is not a valid name")
        if not self.net.security_group_exists(ctx, name):
            raise not_found(f"Security group {name} not found for project {ctx.project_id}.")
        return name

    def _add_security_group(self, ctx: RequestContext, req: webob.Request, server: dict,
                            arg: Any) -> Reply:
        name = self._security_group_name(ctx, "addSecurityGroup", arg)
        if name in server["security_groups"]:
            raise bad_request(f"Security group {name} is already associated with the instance "
                              f"{server['id']}")
        self.compute.set_state(server["id"], security_groups=[*server["security_groups"], name])
        return Reply(202)

    def _remove_security_group(self, ctx: RequestContext, req: webob.Request, server: dict,
                               arg: Any) -> Reply:
        name = self._security_group_name(ctx, "removeSecurityGroup", arg)
        if name not in server["security_groups"]:
            raise bad_request(f"Security group {name} not associated with the instance "
                              f"{server['id']}")
        self.compute.set_state(server["id"], security_groups=[
            g for g in server["security_groups"] if g != name])
        return Reply(202)

    def _inject_network_info(self, ctx: RequestContext, req: webob.Request, server: dict,
                             arg: Any) -> Reply:
        """An admin action with nothing to do here: guests take their addresses from DHCP."""
        if not ctx.is_admin:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-admin-actions:"
                                "inject_network_info to be performed.")
        return Reply(202)

    def _reset_state(self, ctx: RequestContext, req: webob.Request, server: dict,
                     arg: Any) -> Reply:
        """os-resetState (admin): vm_state `error` or `active`, task_state cleared, recorded as
        the instance action `resetState`; what an operator does to a server stuck mid-task."""
        if not ctx.is_admin:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-admin-actions:reset_state "
                                "to be performed.")
        state = arg.get("state") if isinstance(arg, dict) else None
        if state not in ("error", "active"):
            raise validation.invalid("os-resetState/state", state,
                                     f"{state!r} is not one of ['active', 'error']")
        self.compute.action_start(server, "resetState", ctx)
        self.compute.set_state(server["id"], vm_state=state, task_state=None)
        return Reply(202)

    def _unlock(self, ctx: RequestContext, req: webob.Request, server: dict, arg: Any) -> Reply:
        if server.get("locked_by") == "admin" and not ctx.is_admin:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-lock-server:unlock:"
                                "unlock_override to be performed.")
        self.compute.action_start(server, "unlock", ctx)
        self.compute.set_state(server["id"], locked=False, locked_reason=None, locked_by=None)
        return Reply(202)

    def _start(self, ctx: RequestContext, req: webob.Request, server: dict, arg: Any) -> Reply:
        if server["vm_state"] != "stopped" or server.get("task_state") is not None:
            state, attr = ((server["task_state"], "task_state") if server.get("task_state")
                           else (server["vm_state"], "vm_state"))
            raise conflict(f"Cannot 'start' instance {server['id']} while it is in {attr} "
                           f"{state}")
        self.compute.set_state(server["id"], task_state="powering-on")
        request_id = self.compute.action_start(server, "start", ctx)
        self.compute.spawn(self.compute.start, server["id"], request_id)
        return Reply(202)

    def _stop(self, ctx: RequestContext, req: webob.Request, server: dict, arg: Any) -> Reply:
        if server["vm_state"] not in ("active", "error") or server.get("task_state") is not None:
            state, attr = ((server["task_state"], "task_state") if server.get("task_state")
                           else (server["vm_state"], "vm_state"))
            raise conflict(f"Cannot 'stop' instance {server['id']} while it is in {attr} "
                           f"{state}")
        self.compute.set_state(server["id"], task_state="powering-off")
        request_id = self.compute.action_start(server, "stop", ctx)
        self.compute.spawn(self.compute.stop, server["id"], request_id)
        return Reply(202)

    def _reboot(self, ctx: RequestContext, req: webob.Request, server: dict, arg: Any) -> Reply:
        check_state(server, "reboot")
        request_id = self.compute.action_start(server, "reboot", ctx)

        def reboot(server_id: str) -> None:
            self.compute.stop(server_id, request_id)
            self.compute.start(server_id, request_id)
        self.compute.set_state(server["id"], task_state="rebooting")
        self.compute.spawn(reboot, server["id"])
        return Reply(202)

    def _create_image(self, ctx: RequestContext, req: webob.Request, server: dict,
                      arg: Any) -> Reply:
        if not isinstance(arg, dict) or not isinstance(arg.get("name"), str):
            raise bad_request(f"Invalid input for field/attribute createImage. Value: {arg}. "
                              "'name' is a required property")
        name = validation.name("name", arg["name"]).strip()
        extra = validation.metadata("createImage/metadata", arg.get("metadata") or {})
        rule = self.fault(req)
        if rule is not None and rule.kind == "quota-exceeded":
            raise ApiError(403, "Quota exceeded for resources: ['snapshots']" if
                           is_volume_backed(server) else
                           "Quota exceeded for metadata_items: Requested 1, but already used "
                           f"{MAX_METADATA_ITEMS} of {MAX_METADATA_ITEMS} metadata_items")
        hang = rule is not None and rule.kind == "hang-snapshot"
        check_state(server)
        try:
            if is_volume_backed(server):
                image_id = self.snapshots.create_volume_backed(ctx, server, name, extra, hang)
            else:
                image_id = self.snapshots.create_image_backed(ctx, server, name, extra, hang)
        except NovaError as exc:
            raise ApiError(exc.code, exc.message) from exc
        if ctx.at_least("2.45"):
            return Reply(202, {"image_id": image_id})
        return Reply(202, None, {"Location": f"{self.compute.cfg.glance_url}/images/{image_id}"})

    def _create_backup(self, ctx: RequestContext, req: webob.Request, server: dict,
                       arg: Any) -> Reply:
        """createBackup (create_backup.create_backup schema): an image-backed snapshot of
        image_type `backup`, older backups of its `backup_type` rotated out; no image id in
        the answer when `rotation` is 0, since that one is rotated out too."""
        if not isinstance(arg, dict):
            raise validation.invalid("createBackup", arg, f"{arg!r} is not of type 'object'")
        for key in ("name", "backup_type", "rotation"):
            if key not in arg:
                raise validation.invalid("createBackup", arg, f"'{key}' is a required property")
        extra = sorted(set(arg) - {"name", "backup_type", "rotation", "metadata"})
        if extra:
            raise validation.invalid("createBackup", arg, "Additional properties are not "
                                     f"allowed ({', '.join(repr(k) for k in extra)} unexpected)")
        name = validation.name("createBackup/name", arg["name"]).strip()
        if not isinstance(arg["backup_type"], str):
            raise validation.invalid("createBackup/backup_type", arg["backup_type"],
                                     f"{arg['backup_type']!r} is not of type 'string'")
        rotation = arg["rotation"]
        if isinstance(rotation, bool) or not (
                (isinstance(rotation, int) and rotation >= 0)
                or (isinstance(rotation, str) and rotation.isdigit())):
            raise validation.invalid("createBackup/rotation", rotation,
                                     f"{rotation!r} is not a non-negative integer")
        rotation = int(rotation)
        extra_meta = validation.metadata("createBackup/metadata", arg.get("metadata") or {})
        check_state(server, "createBackup")
        if is_volume_backed(server):
            raise bad_request("Backup is not supported for volume-backed instances.")
        try:
            image_id = self.snapshots.create_image_backed(
                ctx, server, name, extra_meta, hang=False,
                backup=BackupRotation(arg["backup_type"], rotation))
        except NovaError as exc:
            raise ApiError(exc.code, exc.message) from exc
        if rotation == 0:
            return Reply(202)
        if ctx.at_least("2.45"):
            return Reply(202, {"image_id": image_id})
        return Reply(202, None, {"Location": f"{self.compute.cfg.glance_url}/images/{image_id}"})

    # ---- metadata ----------------------------------------------------------------------------
    def _set_metadata(self, server_id: str, metadata: dict[str, str]) -> None:
        server = self.store.get("servers", server_id)
        if server is not None:
            self.quotas.check_metadata(server["project_id"], metadata)
        self.compute.set_state(server_id, metadata=metadata)

    def metadata_list(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        return Reply(200, {"metadata": self.get_server(ctx, server_id)["metadata"]})

    def metadata_replace(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        self.get_server(ctx, server_id)
        meta = json_body(req).get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("Malformed request body")
        meta = validation.metadata("metadata", meta)
        self._set_metadata(server_id, meta)
        return Reply(200, {"metadata": meta})

    def metadata_update(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        server = self.get_server(ctx, server_id)
        meta = json_body(req).get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("Malformed request body")
        merged = dict(server["metadata"], **validation.metadata("metadata", meta))
        self._set_metadata(server_id, merged)
        return Reply(200, {"metadata": merged})

    def metadata_show(self, ctx: RequestContext, req: webob.Request, server_id: str,
                      key: str) -> Reply:
        meta = self.get_server(ctx, server_id)["metadata"]
        if key not in meta:
            raise not_found("Metadata item was not found")
        return Reply(200, {"meta": {key: meta[key]}})

    def metadata_set(self, ctx: RequestContext, req: webob.Request, server_id: str,
                     key: str) -> Reply:
        server = self.get_server(ctx, server_id)
        meta = json_body(req).get("meta")
        if not isinstance(meta, dict) or len(meta) != 1:
            raise bad_request("Malformed request body")
        meta = validation.metadata("meta", meta)
        if key not in meta:
            raise bad_request("Request body and URI mismatch")
        merged = dict(server["metadata"], **meta)
        self._set_metadata(server_id, merged)
        return Reply(200, {"meta": meta})

    def metadata_delete(self, ctx: RequestContext, req: webob.Request, server_id: str,
                        key: str) -> Reply:
        server = self.get_server(ctx, server_id)
        if key not in server["metadata"]:
            raise not_found("Metadata item was not found")
        meta = dict(server["metadata"])
        meta.pop(key)
        self._set_metadata(server_id, meta)
        return Reply(204)

    # ---- tags (2.26) -------------------------------------------------------------------------
    def _tags_server(self, ctx: RequestContext, server_id: str) -> dict[str, Any]:
        if not ctx.at_least("2.26"):
            raise not_found("The resource could not be found.")
        return self.get_server(ctx, server_id)

    def tags_list(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        return Reply(200, {"tags": self._tags_server(ctx, server_id)["tags"]})

    def tags_replace(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        self._tags_server(ctx, server_id)
        tags = json_body(req).get("tags")
        if not isinstance(tags, list):
            raise bad_request("Malformed request body")
        if len(tags) > MAX_TAGS:
            raise bad_request(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
        tags = list(dict.fromkeys(str(t) for t in tags))
        self.compute.set_state(server_id, tags=tags)
        return Reply(200, {"tags": tags})

    def tags_delete_all(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        self._tags_server(ctx, server_id)
        self.compute.set_state(server_id, tags=[])
        return Reply(204)

    def tag_check(self, ctx: RequestContext, req: webob.Request, server_id: str,
                  tag: str) -> Reply:
        if tag not in self._tags_server(ctx, server_id)["tags"]:
            raise not_found(f"Tag {tag} could not be found.")
        return Reply(204)

    def tag_add(self, ctx: RequestContext, req: webob.Request, server_id: str, tag: str) -> Reply:
        server = self._tags_server(ctx, server_id)
        if tag in server["tags"]:
            return Reply(204)
        if len(server["tags"]) >= MAX_TAGS:
            raise bad_request(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
        self.compute.set_state(server_id, tags=server["tags"] + [tag])
        return Reply(201, None, {"Location": f"{ctx.host_url}/v2.1/servers/{server_id}/tags/"
                                             f"{tag}"})

    def tag_delete(self, ctx: RequestContext, req: webob.Request, server_id: str,
                   tag: str) -> Reply:
        server = self._tags_server(ctx, server_id)
        if tag not in server["tags"]:
            raise not_found(f"Tag {tag} could not be found.")
        self.compute.set_state(server_id, tags=[t for t in server["tags"] if t != tag])
        return Reply(204)

    # ---- instance actions --------------------------------------------------------------------
    def _action_view(self, ctx: RequestContext, action: dict[str, Any]) -> dict[str, Any]:
        out = {k: action[k] for k in ("action", "instance_uuid", "message", "project_id",
                                      "request_id", "start_time", "user_id")}
        if ctx.at_least("2.58"):
            out["updated_at"] = action["updated_at"]
        return out

    def _action_server(self, ctx: RequestContext, server_id: str) -> dict[str, Any]:
        """The server whose instance actions are asked for: from 2.21 on also a deleted one."""
        try:
            return self.get_server(ctx, server_id)
        except ApiError:
            gone = self.store.get("deleted_servers", server_id)
            if (not ctx.at_least("2.21") or gone is None
                    or (gone["project_id"] != ctx.project_id and not ctx.is_admin)):
                raise
            return gone

    def actions_list(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        self._action_server(ctx, server_id)
        with self.store.read() as db:
            actions = [dict(a) for a in db["actions"].get(server_id, [])]
        actions.reverse()
        return Reply(200, {"instanceActions": [self._action_view(ctx, a) for a in actions]})

    def action_show(self, ctx: RequestContext, req: webob.Request, server_id: str,
                    request_id: str) -> Reply:
        server = self._action_server(ctx, server_id)
        with self.store.read() as db:
            action = next((dict(a) for a in db["actions"].get(server_id, [])
                           if a["request_id"] == request_id), None)
        if action is None:
            raise not_found(f"Action for request_id {request_id} on instance {server_id} not "
                            "found")
        out = self._action_view(ctx, action)
        if ctx.is_admin or ctx.at_least("2.51"):
            events = []
            for ev in action["events"]:
                item = {k: ev[k] for k in ("event", "start_time", "finish_time", "result")}
                if ctx.is_admin:
                    item["traceback"] = ev["traceback"]
                if ctx.at_least("2.62"):
                    if ctx.is_admin:
                        item["host"] = ev["host"]
                    item["hostId"] = host_id(server["project_id"])
                if ctx.at_least("2.84"):
                    item["details"] = ev.get("details")
                events.append(item)
            out["events"] = events
        return Reply(200, {"instanceAction": out})

    # ---- ips / interfaces --------------------------------------------------------------------
    def ips(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        self.get_server(ctx, server_id)
        addrs = self.net.addresses(server_id)
        return Reply(200, {"addresses": {n: [{"version": a["version"], "addr": a["addr"]}
                                             for a in items] for n, items in addrs.items()}})

    def ips_of_network(self, ctx: RequestContext, req: webob.Request, server_id: str,
                       network: str) -> Reply:
        """GET ips/{network_label}: one network's addresses, 404 when the server has none there."""
        addresses = self.ips(ctx, req, server_id).body["addresses"]
        if network not in addresses:
            raise not_found("Instance is not a member of specified network")
        return Reply(200, {network: addresses[network]})

    def interfaces(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        self.get_server(ctx, server_id)
        ports = [p for p in self.store.values("ports") if p["device_id"] == server_id]
        return Reply(200, {"interfaceAttachments": [
            {"port_id": p["id"], "net_id": p["network_id"], "mac_addr": p["mac_address"],
             "port_state": p["status"], "fixed_ips": p["fixed_ips"], "tag": None}
            for p in ports]})


    # ---- os-server-password ---------------------------------------------------------------------
    def password_show(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        """The encrypted password a guest posted to the metadata service; the dev cloud has no
        metadata service, so it is empty until then, as on a real cloud before the guest posts."""
        return Reply(200, {"password": self.get_server(ctx, server_id).get("password") or ""})

    def password_clear(self, ctx: RequestContext, req: webob.Request, server_id: str) -> Reply:
        self.get_server(ctx, server_id)
        self.compute.set_state(server_id, password="")
        return Reply(204)

    # ---- os-server-external-events (Cinder tells Nova about volume changes) ------------------
    def external_events(self, ctx: RequestContext, req: webob.Request) -> Reply:
        """Accepted and acknowledged per event, as Nova answers Cinder's notifications."""
        if not ctx.is_admin and "service" not in ctx.roles:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-server-external-events:"
                                "create to be performed.")
        events = json_body(req).get("events")
        if not isinstance(events, list) or not events:
            raise bad_request("Invalid input for field/attribute events.")
        out = []
        for ev in events:
            found = self.store.get("servers", ev.get("server_uuid", "")) is not None
            if found:
                self.events.deliver(ev["server_uuid"], ev.get("name", ""), ev.get("tag", ""),
                                    ev.get("status", "completed"))
            out.append(dict(ev, status="completed" if found else "failed",
                            code=200 if found else 404))
        if not any(e["code"] == 200 for e in out):
            raise not_found("No instances found for any event")
        return Reply(207 if any(e["code"] != 200 for e in out) else 200, {"events": out})


def add_routes(router: Router, api: ServersApi) -> None:
    r = router.add
    r("GET", "/servers", api.list)
    r("GET", "/servers/detail", api.list_detail)
    r("POST", "/servers", api.create)
    r("GET", "/servers/{server_id}", api.show)
    r("PUT", "/servers/{server_id}", api.update)
    r("DELETE", "/servers/{server_id}", api.delete)
    r("POST", "/servers/{server_id}/action", api.action)
    r("GET", "/servers/{server_id}/metadata", api.metadata_list)
    r("PUT", "/servers/{server_id}/metadata", api.metadata_replace)
    r("POST", "/servers/{server_id}/metadata", api.metadata_update)
    r("GET", "/servers/{server_id}/metadata/{key}", api.metadata_show)
    r("PUT", "/servers/{server_id}/metadata/{key}", api.metadata_set)
    r("DELETE", "/servers/{server_id}/metadata/{key}", api.metadata_delete)
    r("GET", "/servers/{server_id}/tags", api.tags_list)
    r("PUT", "/servers/{server_id}/tags", api.tags_replace)
    r("DELETE", "/servers/{server_id}/tags", api.tags_delete_all)
    r("GET", "/servers/{server_id}/tags/{tag}", api.tag_check)
    r("PUT", "/servers/{server_id}/tags/{tag}", api.tag_add)
    r("DELETE", "/servers/{server_id}/tags/{tag}", api.tag_delete)
    r("GET", "/servers/{server_id}/os-instance-actions", api.actions_list)
    r("GET", "/servers/{server_id}/os-instance-actions/{request_id}", api.action_show)
    r("GET", "/servers/{server_id}/ips", api.ips)
    r("GET", "/servers/{server_id}/ips/{network}", api.ips_of_network)
    r("GET", "/servers/{server_id}/os-interface", api.interfaces)
    r("GET", "/servers/{server_id}/os-server-password", api.password_show)
    r("DELETE", "/servers/{server_id}/os-server-password", api.password_clear)
    r("POST", "/os-server-external-events", api.external_events)
    att = api.attachments
    r("GET", "/servers/{server_id}/os-volume_attachments",
      lambda ctx, req, server_id: att.list(ctx, api.get_server(ctx, server_id)))
    r("POST", "/servers/{server_id}/os-volume_attachments",
      lambda ctx, req, server_id: att.attach(ctx, req, api.get_server(ctx, server_id)))
    r("GET", "/servers/{server_id}/os-volume_attachments/{volume_id}",
      lambda ctx, req, server_id, volume_id: att.show(ctx, api.get_server(ctx, server_id),
                                                      volume_id))
    r("DELETE", "/servers/{server_id}/os-volume_attachments/{volume_id}",
      lambda ctx, req, server_id, volume_id: att.detach(ctx, api.get_server(ctx, server_id),
                                                        volume_id))
