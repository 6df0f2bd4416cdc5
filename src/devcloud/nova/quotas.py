"""os-quota-sets and the quota checks of server create (Nova's DbQuotaDriver).

A backup product restoring servers meets quotas: a restore into a full project must fail as it
would on a real cloud (403 "Quota exceeded for instances: ..."), and a tool may read the limits
first. Each project has Nova's defaults unless an admin set its own limits; instances, cores and
ram are counted from the project's servers and enforced on create, metadata_items on metadata.
"""

from __future__ import annotations

from typing import Any

import webob

from devcloud.nova import validation
from devcloud.nova.store import Store
from devcloud.nova.wsgi import ApiError, Reply, RequestContext, Router, bad_request, json_body

#: nova.conf [quota] defaults; -1 is unlimited.
DEFAULTS: dict[str, int] = {
    "instances": 10, "cores": 20, "ram": 51200, "metadata_items": 128, "key_pairs": 100,
    "server_groups": 10, "server_group_members": 10, "injected_files": 5,
    "injected_file_content_bytes": 10240, "injected_file_path_bytes": 255,
}
#: Resources removed from the API with the proxy APIs (2.36): shown below it, always unlimited-ish.
PROXY_DEFAULTS = {"fixed_ips": -1, "floating_ips": 10, "security_groups": 10,
                  "security_group_rules": 20}
PERSONALITY = ("injected_files", "injected_file_content_bytes", "injected_file_path_bytes")
#: Where the `default` quota class's changes live in the `quotas` collection (not a project id).
DEFAULT_CLASS = "class:default"


class QuotaExceeded(ApiError):
    def __init__(self, resource: str, requested: int, used: int, limit: int):
        super().__init__(403, f"Quota exceeded for {resource}: Requested {requested}, but "
                              f"already used {used} of {limit} {resource}")


class Quotas:
    def __init__(self, store: Store):
        self.store = store

    def default_limits(self) -> dict[str, int]:
        """Nova's defaults as the `default` quota class (os-quota-class-sets) changed them."""
        return {**DEFAULTS, **(self.store.get("quotas", DEFAULT_CLASS) or {})}

    def limits(self, project_id: str) -> dict[str, int]:
        return {**self.default_limits(), **(self.store.get("quotas", project_id) or {})}

    def usage(self, project_id: str) -> dict[str, int]:
        servers = [s for s in self.store.values("servers") if s["project_id"] == project_id
                   and not s.get("proxy")]
        return {"instances": len(servers),
                "cores": sum(int(s["flavor"]["vcpus"]) for s in servers),
                "ram": sum(int(s["flavor"]["ram"]) for s in servers),
                "key_pairs": 0, "server_groups": sum(
                    1 for g in self.store.values("server_groups") if g["project_id"] == project_id)}

    def instances_allowed(self, project_id: str, flavor: dict[str, Any], min_count: int,
                          max_count: int) -> int:
        """How many of max_count instances fit (at least min_count, or the first resource over
        its limit is a 403), as compute.api._check_num_instances_quota decides."""
        limits, used = self.limits(project_id), self.usage(project_id)
        per_instance = {"instances": 1, "cores": int(flavor["vcpus"]), "ram": int(flavor["ram"])}
        allowed = max_count
        for resource, each in per_instance.items():
            if limits[resource] < 0 or each == 0:
                continue
            fits = max(0, (limits[resource] - used[resource]) // each)
            if fits < min_count:
                raise QuotaExceeded(resource, each * max_count, used[resource],
                                    limits[resource])
            allowed = min(allowed, fits)
        return allowed

    def check_metadata(self, project_id: str, metadata: dict[str, Any]) -> None:
        """_check_metadata_properties_quota: a server's metadata counts against metadata_items."""
        limit = self.limits(project_id)["metadata_items"]
        if -1 < limit < len(metadata):
            raise QuotaExceeded("metadata_items", len(metadata), 0, limit)

    # ---- API --------------------------------------------------------------------------------
    def _view(self, ctx: RequestContext, values: dict[str, Any],
              network_until: str = "2.36") -> dict[str, Any]:
        """The resources a microversion shows: network ones below 2.36 (2.50 for quota classes,
        which also show server groups only from 2.50), no personality from 2.57."""
        out = {k: v for k, v in values.items() if k not in PROXY_DEFAULTS}
        if not ctx.at_least(network_until):
            out = {**out, **{k: values.get(k, v) for k, v in PROXY_DEFAULTS.items()}}
        if network_until == "2.50" and not ctx.at_least("2.50"):
            out.pop("server_groups", None)
            out.pop("server_group_members", None)
        if ctx.at_least("2.57"):
            for key in PERSONALITY:
                out.pop(key, None)
        return out

    def _project(self, ctx: RequestContext, project_id: str) -> str:
        if not ctx.is_admin and project_id != ctx.project_id:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-quota-sets:show to be "
                                "performed.")
        return project_id

    def show(self, ctx: RequestContext, req: webob.Request, project_id: str) -> Reply:
        self._project(ctx, project_id)
        return Reply(200, {"quota_set": {"id": project_id,
                                         **self._view(ctx, self.limits(project_id))}})

    def detail(self, ctx: RequestContext, req: webob.Request, project_id: str) -> Reply:
        self._project(ctx, project_id)
        used = self.usage(project_id)
        values = {k: {"limit": v, "in_use": used.get(k, 0), "reserved": 0}
                  for k, v in self._view(ctx, self.limits(project_id)).items()}
        return Reply(200, {"quota_set": {"id": project_id, **values}})

    def defaults(self, ctx: RequestContext, req: webob.Request, project_id: str) -> Reply:
        return Reply(200, {"quota_set": {"id": project_id, **self._view(ctx, self.default_limits())}})

    def update(self, ctx: RequestContext, req: webob.Request, project_id: str) -> Reply:
        if not ctx.is_admin:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-quota-sets:update to be "
                                "performed.")
        body = json_body(req).get("quota_set")
        if not isinstance(body, dict):
            raise bad_request("Invalid input for field/attribute quota_set. Value: None. None "
                              "is not of type 'object'")
        known = set(self._view(ctx, self.default_limits())) | {"force"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise validation.invalid("quota_set", body, "Additional properties are not allowed "
                                     f"({', '.join(repr(k) for k in unknown)} unexpected)")
        force = str(body.get("force", False)).lower() in ("true", "1", "yes", "on")
        used = self.usage(project_id)
        changes: dict[str, int] = {}
        for key, value in body.items():
            if key == "force":
                continue
            if isinstance(value, bool) or not (isinstance(value, int) or (
                    isinstance(value, str) and value.lstrip("-").isdigit())) or int(value) < -1:
                raise validation.invalid(f"quota_set/{key}", value,
                                         f"{value!r} is not an integer of at least -1")
            value = int(value)
            if not force and value != -1 and value < used.get(key, 0):
                raise bad_request(f"Quota limit {value} for {key} must be greater than or "
                                  f"equal to already used and reserved {used[key]}.")
            changes[key] = value
        with self.store.write() as db:
            db["quotas"].setdefault(project_id, {}).update(changes)
        return Reply(200, {"quota_set": self._view(ctx, self.limits(project_id))})

    def delete(self, ctx: RequestContext, req: webob.Request, project_id: str) -> Reply:
        if not ctx.is_admin:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-quota-sets:delete to be "
                                "performed.")
        with self.store.write() as db:
            db["quotas"].pop(project_id, None)
        return Reply(202)


    # ---- os-quota-class-sets: the `default` class is Nova's defaults --------------------------
    def class_show(self, ctx: RequestContext, req: webob.Request, class_name: str) -> Reply:
        self._admin(ctx, "os-quota-class-sets:show")
        return Reply(200, {"quota_class_set": {
            "id": class_name, **self._view(ctx, self._class(class_name), "2.50")}})

    def class_update(self, ctx: RequestContext, req: webob.Request, class_name: str) -> Reply:
        self._admin(ctx, "os-quota-class-sets:update")
        body = json_body(req).get("quota_class_set")
        if not isinstance(body, dict):
            raise bad_request("Invalid input for field/attribute quota_class_set. Value: None. "
                              "None is not of type 'object'")
        known = set(self._view(ctx, self.default_limits(), "2.50"))
        changes: dict[str, int] = {}
        for key, value in body.items():
            if key not in known or isinstance(value, bool) or not isinstance(value, int) \
                    or value < -1:
                raise validation.invalid(f"quota_class_set/{key}", value,
                                         f"{value!r} is not a known resource's limit")
            changes[key] = value
        key = DEFAULT_CLASS if class_name == "default" else f"class:{class_name}"
        with self.store.write() as db:
            db["quotas"].setdefault(key, {}).update(changes)
        return Reply(200, {"quota_class_set": self._view(ctx, self._class(class_name), "2.50")})

    def _class(self, class_name: str) -> dict[str, int]:
        if class_name == "default":
            return self.default_limits()
        return {**DEFAULTS, **(self.store.get("quotas", f"class:{class_name}") or {})}

    @staticmethod
    def _admin(ctx: RequestContext, rule: str) -> None:
        if not ctx.is_admin:
            raise ApiError(403, f"Policy doesn't allow os_compute_api:{rule} to be performed.")


def add_routes(router: Router, api: Quotas) -> None:
    r = router.add
    r("GET", "/os-quota-sets/{project_id}", api.show)
    r("GET", "/os-quota-sets/{project_id}/detail", api.detail)
    r("GET", "/os-quota-sets/{project_id}/defaults", api.defaults)
    r("PUT", "/os-quota-sets/{project_id}", api.update)
    r("DELETE", "/os-quota-sets/{project_id}", api.delete)
    r("GET", "/os-quota-class-sets/{class_name}", api.class_show)
    r("PUT", "/os-quota-class-sets/{class_name}", api.class_update)
