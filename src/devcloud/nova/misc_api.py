"""Flavors, keypairs, availability zones, limits and the version documents."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import webob

from devcloud.nova import validation, views
from devcloud.nova.compute import iso_us, now
from devcloud.nova.quotas import Quotas
from devcloud.nova.store import Store
from devcloud.nova.wsgi import (
    MAX_VERSION,
    MIN_VERSION,
    Reply,
    RequestContext,
    Router,
    bad_request,
    conflict,
    json_body,
    not_found,
    version_str,
)

#: Seeded flavors (id, name, ram MiB, disk GiB, vcpus, extra specs); ids as devstack makes them.
SEED_FLAVORS = [
    ("1", "m1.tiny", 512, 1, 1, {"hw_rng:allowed": "True"}),
    ("2", "m1.small", 2048, 20, 1, {"hw:cpu_policy": "shared"}),
    ("3", "m1.medium", 4096, 40, 2, {"hw:cpu_policy": "shared", "hw:mem_page_size": "any"}),
    ("42", "m1.nano", 256, 1, 1, {"hw_rng:allowed": "True"}),
    ("84", "m1.micro", 384, 2, 1, {"hw:watchdog_action": "reset"}),
]


def seed_flavors(store: Store) -> None:
    with store.write() as db:
        for fid, name, ram, disk, vcpus, specs in SEED_FLAVORS:
            db["flavors"].setdefault(fid, {
                "id": fid, "name": name, "ram": ram, "disk": disk, "vcpus": vcpus,
                "ephemeral": 0, "swap": 0, "description": None, "extra_specs": specs})


def version_doc(base_url: str) -> dict[str, Any]:
    return {"id": "v2.1", "status": "CURRENT", "version": version_str(MAX_VERSION),
            "min_version": version_str(MIN_VERSION), "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base_url}/v2.1/"},
                      {"rel": "describedby", "type": "text/html",
                       "href": "http://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2.1"}]}


def versions_app(environ: dict, start_response: Any) -> list[bytes]:
    """GET / and GET /v2.1: unauthenticated version discovery, as Nova serves it."""
    import json
    req = webob.Request(environ)
    base = req.host_url
    path = req.path_info.rstrip("/")
    if path in ("", "/"):
        v2 = {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
              "updated": "2011-01-21T11:33:21Z",
              "links": [{"rel": "self", "href": f"{base}/v2/"}]}
        v21 = version_doc(base)
        v21 = {k: v21[k] for k in ("id", "status", "version", "min_version", "updated")}
        v21["links"] = [{"rel": "self", "href": f"{base}/v2.1/"}]
        body: dict[str, Any] = {"versions": [v2, v21]}
    elif path.endswith("/v2"):  # the v2.0-compatible API: its own document, no microversions
        body = {"version": {
            "id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
            "updated": "2011-01-21T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}/v2/"},
                      {"rel": "describedby", "type": "text/html",
                       "href": "http://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2"}]}}
    else:
        body = {"version": version_doc(base)}
    payload = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(payload)))])
    return [payload]


class MiscApi:
    def __init__(self, store: Store):
        self.store = store

    # ---- flavors -----------------------------------------------------------------------------
    def _flavors(self, req: webob.Request) -> list[dict[str, Any]]:
        flavors = sorted(self.store.values("flavors"), key=lambda f: (f["id"].isdigit() and
                                                                      int(f["id"]), f["id"]))
        if req.GET.get("minRam"):
            flavors = [f for f in flavors if f["ram"] >= int(req.GET["minRam"])]
        if req.GET.get("minDisk"):
            flavors = [f for f in flavors if f["disk"] >= int(req.GET["minDisk"])]
        return validation.page(flavors, req.GET, key=lambda f: f["id"])

    def flavors(self, ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"flavors": [views.flavor(ctx, f, detail=False)
                                       for f in self._flavors(req)]})

    def flavors_detail(self, ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"flavors": [views.flavor(ctx, f) for f in self._flavors(req)]})

    def _flavor(self, flavor_id: str) -> dict[str, Any]:
        flv = self.store.get("flavors", flavor_id)
        if flv is None:
            raise not_found(f"Flavor {flavor_id} could not be found.")
        return flv

    def flavor_show(self, ctx: RequestContext, req: webob.Request, flavor_id: str) -> Reply:
        return Reply(200, {"flavor": views.flavor(ctx, self._flavor(flavor_id))})

    def extra_specs(self, ctx: RequestContext, req: webob.Request, flavor_id: str) -> Reply:
        return Reply(200, {"extra_specs": self._flavor(flavor_id)["extra_specs"]})

    def extra_spec(self, ctx: RequestContext, req: webob.Request, flavor_id: str,
                   key: str) -> Reply:
        specs = self._flavor(flavor_id)["extra_specs"]
        if key not in specs:
            raise not_found(f"Flavor {flavor_id} has no extra specs with key {key}.")
        return Reply(200, {key: specs[key]})

    # ---- keypairs ----------------------------------------------------------------------------
    def _kp_view(self, kp: dict[str, Any], ctx: RequestContext, full: bool) -> dict[str, Any]:
        out = {"name": kp["name"], "public_key": kp["public_key"],
               "fingerprint": kp["fingerprint"]}
        if ctx.at_least("2.2"):
            out["type"] = kp["type"]
        if full:
            out.update({"user_id": kp["user_id"], "created_at": kp["created_at"],
                        "deleted": False, "deleted_at": None, "updated_at": None, "id": kp["id"]})
        return out

    def keypairs(self, ctx: RequestContext, req: webob.Request) -> Reply:
        user = req.GET.get("user_id") if ctx.is_admin and req.GET.get("user_id") else ctx.user_id
        kps = [kp for kp in self.store.values("keypairs") if kp["user_id"] == user]
        kps.sort(key=lambda k: k["name"])
        return Reply(200, {"keypairs": [{"keypair": self._kp_view(kp, ctx, False)}
                                        for kp in kps]})

    def keypair_create(self, ctx: RequestContext, req: webob.Request) -> Reply:
        data = json_body(req).get("keypair")
        if not isinstance(data, dict) or not data.get("name"):
            raise bad_request(f"Invalid input for field/attribute keypair. Value: {data}. "
                              "'name' is a required property")
        _check_keypair_name(ctx, data["name"])
        key = f"{ctx.user_id}/{data['name']}"
        if self.store.get("keypairs", key) is not None:
            raise conflict(f"Key pair '{data['name']}' already exists.")
        private = None
        public = data.get("public_key")
        if not public:
            if ctx.at_least("2.92"):
                raise bad_request(f"Invalid input for field/attribute keypair. Value: {data}. "
                                  "'public_key' is a required property")
            private, public = _generate_keypair()
        blob = _public_key_blob(public)
        fingerprint = ":".join(f"{b:02x}" for b in hashlib.md5(blob, usedforsecurity=False).digest())
        with self.store.write() as db:
            counter = db["meta"].get("keypair_counter", 0) + 1
            db["meta"]["keypair_counter"] = counter
            kp = {"id": counter, "name": data["name"], "user_id": ctx.user_id,
                  "public_key": public, "fingerprint": fingerprint,
                  "type": data.get("type", "ssh"), "created_at": iso_us(now())}
            db["keypairs"][key] = kp
        out = self._kp_view(kp, ctx, False)
        out["user_id"] = ctx.user_id
        if private:
            out["private_key"] = private
        return Reply(201 if ctx.at_least("2.2") else 200, {"keypair": out})

    def keypair_show(self, ctx: RequestContext, req: webob.Request, name: str) -> Reply:
        kp = self.store.get("keypairs", f"{ctx.user_id}/{name}")
        if kp is None:
            raise not_found(f"Keypair {name} not found for user {ctx.user_id}")
        return Reply(200, {"keypair": self._kp_view(kp, ctx, True)})

    def keypair_delete(self, ctx: RequestContext, req: webob.Request, name: str) -> Reply:
        with self.store.write() as db:
            if db["keypairs"].pop(f"{ctx.user_id}/{name}", None) is None:
                raise not_found(f"Keypair {name} not found for user {ctx.user_id}")
        return Reply(202 if not ctx.at_least("2.2") else 204)

    # ---- availability zones, limits ----------------------------------------------------------
    def azs(self, ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"availabilityZoneInfo": [
            {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]})

    def azs_detail(self, ctx: RequestContext, req: webob.Request) -> Reply:
        return Reply(200, {"availabilityZoneInfo": [
            {"zoneName": "internal", "zoneState": {"available": True}, "hosts": {
                "devcloud": {"nova-conductor": {"available": True, "active": True,
                                                "updated_at": iso_us(now())}}}},
            {"zoneName": "nova", "zoneState": {"available": True}, "hosts": {
                "devcloud": {"nova-compute": {"available": True, "active": True,
                                              "updated_at": iso_us(now())}}}}]})

    def limits(self, ctx: RequestContext, req: webob.Request) -> Reply:
        project = req.GET.get("tenant_id") if ctx.is_admin and req.GET.get("tenant_id") \
            else ctx.project_id
        servers = [s for s in self.store.values("servers") if s["project_id"] == project]
        q = Quotas(self.store).limits(project)
        absolute: dict[str, Any] = {
            "maxServerMeta": q["metadata_items"], "maxTotalInstances": q["instances"],
            "maxPersonality": q["injected_files"], "maxImageMeta": q["metadata_items"],
            "maxPersonalitySize": q["injected_file_content_bytes"],
            "maxTotalRAMSize": q["ram"], "maxServerGroups": q["server_groups"],
            "maxSecurityGroupRules": 20, "maxTotalKeypairs": q["key_pairs"],
            "maxSecurityGroups": 10, "maxTotalCores": q["cores"],
            "maxServerGroupMembers": q["server_group_members"],
            "maxTotalFloatingIps": 10, "totalCoresUsed": sum(s["flavor"]["vcpus"]
                                                             for s in servers),
            "totalRAMUsed": sum(s["flavor"]["ram"] for s in servers),
            "totalInstancesUsed": len(servers), "totalFloatingIpsUsed": 0,
            "totalSecurityGroupsUsed": 0, "totalServerGroupsUsed": 0}
        if ctx.at_least("2.36"):
            for key in ("maxSecurityGroups", "maxSecurityGroupRules", "maxTotalFloatingIps",
                        "totalFloatingIpsUsed", "totalSecurityGroupsUsed"):
                absolute.pop(key)
        if ctx.at_least("2.57"):
            absolute.pop("maxPersonality")
            absolute.pop("maxPersonalitySize")
        return Reply(200, {"limits": {"rate": [], "absolute": absolute}})

#: compute.api._validate_new_key_pair's safe characters; from 2.92 the schema also allows `@`, `.`.
KEYPAIR_NAME = re.compile(r"^[a-zA-Z0-9_\- ]+$")
KEYPAIR_NAME_2_92 = re.compile(r"^[a-zA-Z0-9 @._-]+$")


def _check_keypair_name(ctx: RequestContext, name: Any) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= validation.MAX_LENGTH:
        raise bad_request("Keypair data is invalid: Keypair name must be string and between 1 "
                          "and 255 characters long")
    if not (KEYPAIR_NAME_2_92 if ctx.at_least("2.92") else KEYPAIR_NAME).match(name):
        raise bad_request("Keypair data is invalid: Keypair name contains unsafe characters")


def _public_key_blob(public: Any) -> bytes:
    """The key's wire bytes, once the key loads as an SSH public key (nova.crypto's
    generate_fingerprint): junk, or an RSA key of more bits than OpenSSL takes, is a 400."""
    from cryptography.hazmat.primitives import serialization
    try:
        serialization.load_ssh_public_key(public.encode())
        return base64.b64decode(public.split()[1])
    except Exception:
        raise bad_request("Keypair data is invalid: failed to generate fingerprint") from None


def _generate_keypair() -> tuple[str, str]:
    """An RSA key pair as Nova generates one when no public key is given (before 2.92)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public + " Generated-by-Nova"


def add_routes(router: Router, api: MiscApi) -> None:
    r = router.add
    r("GET", "/flavors", api.flavors)
    r("GET", "/flavors/detail", api.flavors_detail)
    r("GET", "/flavors/{flavor_id}", api.flavor_show)
    r("GET", "/flavors/{flavor_id}/os-extra_specs", api.extra_specs)
    r("GET", "/flavors/{flavor_id}/os-extra_specs/{key}", api.extra_spec)
    r("GET", "/os-keypairs", api.keypairs)
    r("POST", "/os-keypairs", api.keypair_create)
    r("GET", "/os-keypairs/{name}", api.keypair_show)
    r("DELETE", "/os-keypairs/{name}", api.keypair_delete)
    r("GET", "/os-availability-zone", api.azs)
    r("GET", "/os-availability-zone/detail", api.azs_detail)
    r("GET", "/limits", api.limits)
