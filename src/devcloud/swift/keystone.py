"""The Swift all-in-one in a dev cloud's Keystone: a service user and the object-store endpoints.

openstacksdk cannot authenticate with tempauth, so Keystone users reach Swift through the second
proxy (`proxy_keystone`, authtoken + keystoneauth). Its catalog entry, service `swift` of type
`object-store` at `http://host:port/v1/AUTH_$(project_id)s` (all three interfaces: Swift is not
behind the dev cloud's fault proxy), lets `conn.object_store` and stackvault's swift:// find it.
"""

from __future__ import annotations

from devcloud import rest
from devcloud.context import CloudContext
from devcloud.keystone import Identity
from devcloud.swift.config import KeystoneAuth
from devcloud.swift.launch import SwiftAllInOne

SERVICE_USER = "swift"


def register(ctx: CloudContext, swift: SwiftAllInOne) -> KeystoneAuth:
    """Make the service user and the catalog entry match `swift` (idempotent); return authtoken's
    settings for the Keystone proxy."""
    identity = Identity(ctx)
    base, token = identity.base, identity.token
    domain = identity._get("/domains?name=Default")["domains"][0]["id"]
    project = identity._get(f"/projects?name=service&domain_id={domain}")["projects"][0]["id"]
    user = identity._ensure("users", "user", f"name={SERVICE_USER}&domain_id={domain}",
                            {"name": SERVICE_USER, "domain_id": domain,
                             "password": ctx.service_password, "default_project_id": project})
    for role in ("admin", "service"):
        role_id = identity._get(f"/roles?name={role}")["roles"][0]["id"]
        rest.request("PUT", f"{base}/projects/{project}/users/{user}/roles/{role_id}", token=token)

    service = identity._ensure("services", "service", "type=object-store",
                               {"name": "swift", "type": "object-store", "enabled": True})
    url = swift.url("proxy_keystone") + "/v1/AUTH_$(project_id)s"
    endpoints = identity._get(f"/endpoints?service_id={service}")["endpoints"]
    current = {(e["interface"], e["url"], e.get("region_id")) for e in endpoints}
    wanted = {(interface, url, ctx.region) for interface in ("public", "internal", "admin")}
    if current != wanted or len(endpoints) != len(wanted):
        for endpoint in endpoints:
            rest.request("DELETE", f"{base}/endpoints/{endpoint['id']}", token=token)
        for interface, _, region in sorted(wanted):
            identity._post("/endpoints", {"endpoint": {
                "interface": interface, "url": url, "region_id": region, "service_id": service,
                "enabled": True}})
    return KeystoneAuth(www_authenticate_uri=ctx.public_url("keystone"),
                        auth_url=ctx.url("keystone"), username=SERVICE_USER,
                        password=ctx.service_password)
