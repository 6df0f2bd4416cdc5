"""JSON views of servers and flavors, per microversion, as Nova's view builders render them."""

from __future__ import annotations

from typing import Any

from devcloud.nova.compute import host_id
from devcloud.nova.wsgi import RequestContext

STATUS_BY_VM_STATE = {"building": "BUILD", "active": "ACTIVE", "stopped": "SHUTOFF",
                      "error": "ERROR", "deleted": "DELETED", "paused": "PAUSED",
                      "suspended": "SUSPENDED", "shelved_offloaded": "SHELVED_OFFLOADED"}
TASK_STATUS = {"rebooting": "REBOOT", "reboot_pending": "REBOOT", "rebooting_hard": "HARD_REBOOT",
               "rebuilding": "REBUILD", "rebuild_block_device_mapping": "REBUILD",
               "rebuild_spawning": "REBUILD", "resize_prep": "RESIZE", "migrating": "MIGRATING"}
#: common._STATE_MAP: a stopped or errored server being rebuilt shows REBUILD too.
REBUILD_TASKS = ("rebuilding", "rebuild_block_device_mapping", "rebuild_spawning")


def status(server: dict[str, Any]) -> str:
    """common.status_from_state: the vm_state, refined by some task_states."""
    task = server.get("task_state")
    if server["vm_state"] == "active" and task in TASK_STATUS:
        return TASK_STATUS[task]
    if server["vm_state"] in ("stopped", "error") and task in REBUILD_TASKS:
        return "REBUILD"
    return STATUS_BY_VM_STATE.get(server["vm_state"], "UNKNOWN")


def links(ctx: RequestContext, collection: str, item_id: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{ctx.host_url}/v2.1/{collection}/{item_id}"},
            {"rel": "bookmark", "href": f"{ctx.host_url}/{collection}/{item_id}"}]


def server_brief(ctx: RequestContext, server: dict[str, Any]) -> dict[str, Any]:
    return {"id": server["id"], "name": server["name"],
            "links": links(ctx, "servers", server["id"])}


def flavor_in_server(ctx: RequestContext, server: dict[str, Any]) -> dict[str, Any]:
    flavor = server["flavor"]
    if ctx.at_least("2.47"):
        return {"vcpus": flavor["vcpus"], "ram": flavor["ram"], "disk": flavor["disk"],
                "ephemeral": flavor["ephemeral"], "swap": flavor["swap"] or 0,
                "original_name": flavor["name"], "extra_specs": dict(flavor["extra_specs"])}
    return {"id": flavor["id"], "links": [{"rel": "bookmark",
                                           "href": f"{ctx.host_url}/flavors/{flavor['id']}"}]}


def image_in_server(ctx: RequestContext, server: dict[str, Any]) -> Any:
    if not server.get("image_ref"):
        return ""
    image: dict[str, Any] = {"id": server["image_ref"], "links": [
        {"rel": "bookmark", "href": f"{ctx.host_url}/images/{server['image_ref']}"}]}
    if ctx.at_least("2.98"):
        image["properties"] = {k[len("image_"):]: v
                               for k, v in server["system_metadata"].items()
                               if k.startswith("image_") and k not in (
                                   "image_base_image_ref", "image_min_ram", "image_min_disk",
                                   "image_disk_format", "image_container_format")}
    return image


def server_detail(ctx: RequestContext, server: dict[str, Any], addresses: dict[str, Any],
                  *, show: bool = False) -> dict[str, Any]:
    st = status(server)
    out: dict[str, Any] = {
        "id": server["id"], "name": server["name"], "status": st,
        "tenant_id": server["project_id"], "user_id": server["user_id"],
        "metadata": dict(server["metadata"]), "hostId": host_id(server["project_id"]),
        "image": image_in_server(ctx, server), "flavor": flavor_in_server(ctx, server),
        "created": server["created"], "updated": server["updated"], "addresses": addresses,
        "accessIPv4": server.get("access_ipv4", ""), "accessIPv6": server.get("access_ipv6", ""),
        "links": links(ctx, "servers", server["id"]), "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": server["availability_zone"],
        "config_drive": server.get("config_drive", ""), "key_name": server.get("key_name"),
        "OS-SRV-USG:launched_at": server.get("launched_at"),
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:task_state": server.get("task_state"),
        "OS-EXT-STS:vm_state": server["vm_state"],
        "OS-EXT-STS:power_state": server.get("power_state", 0),
        "os-extended-volumes:volumes_attached": [
            ({"id": b["volume_id"], "delete_on_termination": bool(b["delete_on_termination"])}
             if ctx.at_least("2.3") else {"id": b["volume_id"]})
            for b in server["bdms"] if b.get("volume_id")],
    }
    if st in ("BUILD", "ACTIVE"):
        out["progress"] = 0
    if server.get("security_groups"):  # Nova leaves the key out for a server without any
        out["security_groups"] = [{"name": name} for name in server["security_groups"]]
    if ctx.is_admin:
        out["OS-EXT-SRV-ATTR:host"] = "devcloud"
        out["OS-EXT-SRV-ATTR:hypervisor_hostname"] = "devcloud"
        out["OS-EXT-SRV-ATTR:instance_name"] = server["instance_name"]
        if ctx.at_least("2.3"):
            out.update({"OS-EXT-SRV-ATTR:reservation_id": server["reservation_id"],
                        "OS-EXT-SRV-ATTR:launch_index": server.get("launch_index", 0),
                        "OS-EXT-SRV-ATTR:hostname": server["hostname"],
                        "OS-EXT-SRV-ATTR:kernel_id": "", "OS-EXT-SRV-ATTR:ramdisk_id": "",
                        "OS-EXT-SRV-ATTR:root_device_name": server["root_device_name"],
                        "OS-EXT-SRV-ATTR:user_data": server.get("user_data")})
    elif ctx.at_least("2.90"):
        out["OS-EXT-SRV-ATTR:hostname"] = server["hostname"]
    if ctx.at_least("2.9"):
        out["locked"] = bool(server.get("locked"))
    if ctx.at_least("2.16") and ctx.is_admin:
        out["host_status"] = "UP"
    if ctx.at_least("2.19"):
        out["description"] = server.get("description")
    if ctx.at_least("2.26"):
        out["tags"] = list(server.get("tags", []))
    if ctx.at_least("2.63"):
        out["trusted_image_certificates"] = None
    if ctx.at_least("2.71") and show:
        out["server_groups"] = [server["server_group"]] if server.get("server_group") else []
    if ctx.at_least("2.73"):
        out["locked_reason"] = server.get("locked_reason")
    if ctx.at_least("2.96"):
        out["pinned_availability_zone"] = None
    if ctx.at_least("2.100"):
        out["scheduler_hints"] = dict(server.get("scheduler_hints") or {})
    if st in ("ERROR", "DELETED") and server.get("fault"):
        fault = dict(server["fault"])
        if not ctx.is_admin and fault.get("code") == 500:
            fault.pop("details", None)
        out["fault"] = fault
    return out


def flavor(ctx: RequestContext, flv: dict[str, Any], *, detail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": flv["id"], "name": flv["name"],
                           "links": links(ctx, "flavors", flv["id"])}
    if ctx.at_least("2.55"):
        out["description"] = flv.get("description")
    if not detail:
        return out
    out.update({"ram": flv["ram"], "disk": flv["disk"], "vcpus": flv["vcpus"],
                "OS-FLV-EXT-DATA:ephemeral": flv["ephemeral"],
                "OS-FLV-DISABLED:disabled": False,
                "swap": flv["swap"] if ctx.at_least("2.75") else (flv["swap"] or ""),
                "rxtx_factor": 1.0, "os-flavor-access:is_public": True})
    if ctx.at_least("2.61"):
        out["extra_specs"] = dict(flv["extra_specs"])
    return out


#: What Nova's update (PUT /servers/{id}) leaves out of its server below 2.75 (show_AZ=False,
#: show_extended_attr=False, show_srv_usg=False, ...): from 2.75 on it answers the whole show view.
UPDATE_HIDDEN_PREFIXES = ("OS-EXT-AZ:", "OS-EXT-STS:", "OS-EXT-SRV-ATTR:", "OS-SRV-USG:",
                          "os-extended-volumes:")
UPDATE_HIDDEN = {"config_drive", "key_name", "security_groups", "host_status", "server_groups"}


def server_update(ctx: RequestContext, server: dict[str, Any],
                  addresses: dict[str, Any]) -> dict[str, Any]:
    out = server_detail(ctx, server, addresses, show=True)
    if ctx.at_least("2.75"):
        return out
    out["addresses"] = {net: [{"version": a["version"], "addr": a["addr"]} for a in addrs]
                        for net, addrs in addresses.items()}
    return {k: v for k, v in out.items()
            if k not in UPDATE_HIDDEN and not k.startswith(UPDATE_HIDDEN_PREFIXES)}
