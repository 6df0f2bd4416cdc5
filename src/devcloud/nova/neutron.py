"""The little of Neutron (networking API v2.0) a restore needs: networks, subnets, ports, and
security groups, with fixed IPs allocated from a seeded `private` network.

It shares Nova's process and store, so a server's ports are created and released by Nova's
build and delete as Nova's network API would do through Neutron.
"""

from __future__ import annotations

import ipaddress
import random
import uuid
from typing import Any

import webob

from devcloud.nova.compute import iso_z, now
from devcloud.nova.store import Store
from devcloud.nova.wsgi import ApiError, Reply, RequestContext, Router, json_body

PRIVATE_NETWORK = "private"
PRIVATE_CIDR = "10.0.0.0/24"


def _nf(kind: str, item_id: str) -> ApiError:
    return ApiError(404, f"{kind} {item_id} could not be found.", neutron_type=f"{kind}NotFound")


def _stamp(record: dict[str, Any]) -> dict[str, Any]:
    ts = iso_z(now())
    record.setdefault("created_at", ts)
    record["updated_at"] = ts
    record["revision_number"] = record.get("revision_number", 0) + 1
    return record


class Networking:
    """Network records and IP allocation, used by the Neutron API and by Nova's build."""

    def __init__(self, store: Store):
        self.store = store

    # ---- seeding -----------------------------------------------------------------------------
    def seed(self, owner_project: str) -> None:
        """A shared `private` network with one subnet, created once."""
        with self.store.write() as db:
            if any(n["name"] == PRIVATE_NETWORK for n in db["networks"].values()):
                return
        net = self.create_network(owner_project, {"name": PRIVATE_NETWORK, "shared": True})
        self.create_subnet(owner_project, {"name": "private-subnet", "network_id": net["id"],
                                           "cidr": PRIVATE_CIDR, "ip_version": 4})

    def default_security_group(self, project_id: str) -> dict[str, Any]:
        """Neutron creates each project's `default` group on first use."""
        with self.store.write() as db:
            for sg in db["security_groups"].values():
                if sg["project_id"] == project_id and sg["name"] == "default":
                    return sg
            sg_id = str(uuid.uuid4())
            rules: list[dict[str, Any]] = []
            for direction, ethertype, remote in (("ingress", "IPv4", sg_id),
                                                 ("ingress", "IPv6", sg_id),
                                                 ("egress", "IPv4", None),
                                                 ("egress", "IPv6", None)):
                rules.append({"id": str(uuid.uuid4()), "security_group_id": sg_id,
                              "direction": direction, "ethertype": ethertype,
                              "protocol": None, "port_range_min": None,
                              "port_range_max": None, "remote_ip_prefix": None,
                              "remote_group_id": remote, "remote_address_group_id": None,
                              "normalized_cidr": None, "description": "",
                              "tenant_id": project_id, "project_id": project_id,
                              "tags": [], "revision_number": 0,
                              "created_at": iso_z(now()), "updated_at": iso_z(now())})
            sg = _stamp({"id": sg_id, "name": "default", "description": "Default security group",
                         "tenant_id": project_id, "project_id": project_id, "stateful": True,
                         "shared": False, "tags": [], "security_group_rules": rules})
            db["security_groups"][sg_id] = sg
            return sg

    # ---- records -----------------------------------------------------------------------------
    def create_network(self, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        net = _stamp({
            "id": str(uuid.uuid4()), "name": body.get("name", ""),
            "tenant_id": project_id, "project_id": project_id,
            "admin_state_up": body.get("admin_state_up", True), "mtu": 1450, "status": "ACTIVE",
            "subnets": [], "shared": bool(body.get("shared", False)),
            "availability_zone_hints": [], "availability_zones": ["nova"],
            "ipv4_address_scope": None, "ipv6_address_scope": None, "router:external": False,
            "description": body.get("description", ""), "port_security_enabled": True,
            "is_default": False, "qos_policy_id": None, "tags": [], "l2_adjacency": True,
            "dns_domain": ""})
        with self.store.write() as db:
            db["networks"][net["id"]] = net
        return net

    def create_subnet(self, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if "network_id" not in body or "cidr" not in body:
            raise ApiError(400, "Invalid input for operation: network_id and cidr are required.",
                           neutron_type="HTTPBadRequest")
        try:
            cidr = ipaddress.ip_network(body["cidr"], strict=False)
        except ValueError:
            raise ApiError(400, f"Invalid input for cidr. Reason: '{body['cidr']}' is not a "
                                "valid IP subnet.", neutron_type="HTTPBadRequest") from None
        hosts = list(cidr.hosts())
        gateway = body.get("gateway_ip", str(hosts[0]))
        subnet = _stamp({
            "id": str(uuid.uuid4()), "name": body.get("name", ""),
            "network_id": body["network_id"], "tenant_id": project_id, "project_id": project_id,
            "cidr": str(cidr), "ip_version": cidr.version, "gateway_ip": gateway,
            "allocation_pools": body.get("allocation_pools") or
            [{"start": str(hosts[1]), "end": str(hosts[-1])}],
            "enable_dhcp": body.get("enable_dhcp", True), "dns_nameservers": [],
            "host_routes": [], "ipv6_ra_mode": None, "ipv6_address_mode": None,
            "subnetpool_id": None, "description": body.get("description", ""), "tags": [],
            "service_types": [], "dns_publish_fixed_ip": False})
        with self.store.write() as db:
            net = db["networks"].get(body["network_id"])
            if net is None:
                raise _nf("Network", body["network_id"])
            db["subnets"][subnet["id"]] = subnet
            net["subnets"].append(subnet["id"])
        return subnet

    def _next_ip(self, db: dict, subnet: dict) -> str:
        used = {ip["ip_address"] for p in db["ports"].values() for ip in p["fixed_ips"]
                if ip["subnet_id"] == subnet["id"]}
        pool = subnet["allocation_pools"][0]
        start = ipaddress.ip_address(pool["start"]) + 8  # leave room like DHCP/router ports
        end = ipaddress.ip_address(pool["end"])
        addr = start
        while addr <= end:  # type: ignore[operator]  # one pool: one address family
            if str(addr) not in used:
                return str(addr)
            addr += 1
        raise ApiError(409, f"No more IP addresses available on network {subnet['network_id']}.",
                       neutron_type="IpAddressGenerationFailure")

    def create_port(self, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if "network_id" not in body:
            raise ApiError(400, "Failed to parse request. Required attribute 'network_id' not "
                                "specified", neutron_type="HTTPBadRequest")
        sg_ids = body.get("security_groups")
        if sg_ids is None:
            sg_ids = [self.default_security_group(project_id)["id"]]
        with self.store.write() as db:
            net = db["networks"].get(body["network_id"])
            if net is None:
                raise _nf("Network", body["network_id"])
            fixed = []
            wanted = body.get("fixed_ips")
            if wanted:
                for item in wanted:
                    subnet_id = item.get("subnet_id") or net["subnets"][0]
                    subnet = db["subnets"][subnet_id]
                    fixed.append({"subnet_id": subnet_id,
                                  "ip_address": item.get("ip_address") or
                                  self._next_ip(db, subnet)})
            else:
                for subnet_id in net["subnets"][:1]:
                    fixed.append({"subnet_id": subnet_id,
                                  "ip_address": self._next_ip(db, db["subnets"][subnet_id])})
            mac = "fa:16:3e:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
            port = _stamp({
                "id": str(uuid.uuid4()), "name": body.get("name", ""),
                "network_id": net["id"], "tenant_id": project_id, "project_id": project_id,
                "mac_address": body.get("mac_address", mac),
                "admin_state_up": body.get("admin_state_up", True),
                "status": "ACTIVE" if body.get("device_id") else "DOWN",
                "device_id": body.get("device_id", ""), "device_owner":
                body.get("device_owner", ""), "fixed_ips": fixed, "security_groups": sg_ids,
                "allowed_address_pairs": [], "extra_dhcp_opts": [],
                "binding:vnic_type": "normal", "port_security_enabled": True,
                "description": body.get("description", ""), "tags": [], "dns_name": "",
                "dns_assignment": [], "propagate_uplink_status": False})
            db["ports"][port["id"]] = port
            return port

    def bind_port(self, port_id: str, device_id: str) -> dict[str, Any]:
        with self.store.write() as db:
            port = db["ports"].get(port_id)
            if port is None:
                raise _nf("Port", port_id)
            if port["device_id"] and port["device_id"] != device_id:
                raise ApiError(409, f"Port {port_id} is still in use.")
            port.update(device_id=device_id, device_owner="compute:nova", status="ACTIVE")
            return dict(port)

    def release_server_ports(self, server_id: str, created_by_nova: set[str]) -> None:
        """Delete ports Nova created for the server; unbind ports the user passed in."""
        with self.store.write() as db:
            for port_id, port in list(db["ports"].items()):
                if port["device_id"] != server_id:
                    continue
                if port_id in created_by_nova:
                    del db["ports"][port_id]
                else:
                    port.update(device_id="", device_owner="", status="DOWN")

    def security_group_exists(self, ctx: RequestContext, name_or_id: str) -> bool:
        """What Nova's security group lookup finds for a server: the project's group by name or
        id (`default` is made on first use, as Neutron does)."""
        if name_or_id == "default":
            return True
        return any(sg["project_id"] == ctx.project_id and name_or_id in (sg["name"], sg["id"])
                   for sg in self.store.values("security_groups"))

    def visible(self, ctx: RequestContext, record: dict[str, Any]) -> bool:
        return ctx.is_admin or record.get("shared") or record["project_id"] == ctx.project_id

    def addresses(self, server_id: str) -> dict[str, list[dict[str, Any]]]:
        """The server's `addresses` field, keyed by network name."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self.store.read() as db:
            for port in db["ports"].values():
                if port["device_id"] != server_id:
                    continue
                net = db["networks"].get(port["network_id"], {"name": port["network_id"]})
                for ip in port["fixed_ips"]:
                    out.setdefault(net["name"], []).append({
                        "version": ipaddress.ip_address(ip["ip_address"]).version,
                        "addr": ip["ip_address"], "OS-EXT-IPS:type": "fixed",
                        "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]})
        return out


# ---- the API -------------------------------------------------------------------------------
COLLECTIONS = {  # url segment -> (store collection, singular, NotFound kind)
    "networks": ("networks", "network", "Network"),
    "subnets": ("subnets", "subnet", "Subnet"),
    "ports": ("ports", "port", "Port"),
    "security-groups": ("security_groups", "security_group", "SecurityGroup"),
}


def _filter(req: webob.Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for key in set(req.GET.keys()):
        if key in ("fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"):
            continue
        wanted = set(req.GET.getall(key))
        items = [i for i in items if key in i and (
            str(i[key]) in wanted or (isinstance(i[key], bool) and str(i[key]).lower() in
                                      {w.lower() for w in wanted}))]
    fields = req.GET.getall("fields")
    if fields:
        items = [{k: v for k, v in i.items() if k in fields} for i in items]
    return items


def make_router(net: Networking) -> Router:
    router = Router()

    def versions(ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"versions": [{"status": "CURRENT", "id": "v2.0", "links": [
            {"href": req.host_url + "/v2.0/", "rel": "self"}]}]})

    def extensions(ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"extensions": []})

    def make_list(seg: str):
        coll, _, _ = COLLECTIONS[seg]

        def handler(ctx: RequestContext, req: webob.Request) -> Reply:
            if coll == "security_groups":
                net.default_security_group(ctx.project_id)
            items = [i for i in net.store.values(coll) if net.visible(ctx, i)]
            return Reply(200, {coll: _filter(req, items)})
        return handler

    def make_show(seg: str):
        coll, single, kind = COLLECTIONS[seg]

        def handler(ctx: RequestContext, req: webob.Request, item_id: str) -> Reply:
            item = net.store.get(coll, item_id)
            if item is None or not net.visible(ctx, item):
                raise _nf(kind, item_id)
            return Reply(200, {single: item})
        return handler

    def make_delete(seg: str):
        coll, _, kind = COLLECTIONS[seg]

        def handler(ctx: RequestContext, req: webob.Request, item_id: str) -> Reply:
            with net.store.write() as db:
                item = db[coll].get(item_id)
                if item is None or not net.visible(ctx, item):
                    raise _nf(kind, item_id)
                if coll == "networks" and any(p["network_id"] == item_id and p["device_id"]
                                              for p in db["ports"].values()):
                    raise ApiError(409, f"Unable to complete operation on network {item_id}. "
                                        "There are one or more ports still in use on the "
                                        "network.", neutron_type="NetworkInUse")
                if coll == "networks":
                    for sid in item["subnets"]:
                        db["subnets"].pop(sid, None)
                if coll == "subnets":
                    parent = db["networks"].get(item["network_id"])
                    if parent:
                        parent["subnets"] = [s for s in parent["subnets"] if s != item_id]
                del db[coll][item_id]
            return Reply(204)
        return handler

    def create_network(ctx: RequestContext, req: webob.Request) -> Reply:
        body = json_body(req).get("network", {})
        return Reply(201, {"network": net.create_network(ctx.project_id, body)})

    def create_subnet(ctx: RequestContext, req: webob.Request) -> Reply:
        body = json_body(req).get("subnet", {})
        return Reply(201, {"subnet": net.create_subnet(ctx.project_id, body)})

    def create_port(ctx: RequestContext, req: webob.Request) -> Reply:
        body = json_body(req).get("port", {})
        net_rec = net.store.get("networks", body.get("network_id", ""))
        if net_rec is not None and not net.visible(ctx, net_rec):
            raise _nf("Network", body["network_id"])
        return Reply(201, {"port": net.create_port(ctx.project_id, body)})

    router.add("GET", "/", versions)
    router.add("GET", "/v2.0", versions)
    router.add("GET", "/v2.0/extensions", extensions)
    for seg in COLLECTIONS:
        router.add("GET", f"/v2.0/{seg}", make_list(seg))
        router.add("GET", f"/v2.0/{seg}/{{item_id}}", make_show(seg))
        router.add("DELETE", f"/v2.0/{seg}/{{item_id}}", make_delete(seg))
    router.add("POST", "/v2.0/networks", create_network)
    router.add("POST", "/v2.0/subnets", create_subnet)
    router.add("POST", "/v2.0/ports", create_port)
    return router
