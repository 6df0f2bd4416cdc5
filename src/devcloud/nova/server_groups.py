"""os-server-groups: named groups with an (anti-)affinity policy that servers join at create
(scheduler hint `group`), as a restored application's servers may have to rejoin theirs.

The dev cloud has one compute host: affinity always holds, and a second member of an
anti-affinity group cannot be placed, so its build fails with "No valid host was found", as
Nova's scheduler answers on a one-host cloud.
"""

from __future__ import annotations

import re
from typing import Any

import webob

from devcloud.nova import validation
from devcloud.nova.compute import new_uuid
from devcloud.nova.quotas import QuotaExceeded, Quotas
from devcloud.nova.store import Store
from devcloud.nova.wsgi import ApiError, Reply, RequestContext, Router, bad_request, json_body, not_found

POLICIES_2_1 = ("affinity", "anti-affinity")
POLICIES_2_15 = (*POLICIES_2_1, "soft-affinity", "soft-anti-affinity")
#: parameter_types.name: no leading or trailing blanks.
NAME = re.compile(r"^(?! )[^\x00-\x1f]{1,255}(?<! )$")


class ServerGroups:
    def __init__(self, store: Store):
        self.store = store

    def view(self, ctx: RequestContext, group: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": group["id"], "name": group["name"],
                               "members": list(group["members"])}
        if ctx.at_least("2.64"):
            out["policy"] = group["policy"]
            out["rules"] = dict(group.get("rules") or {})
        else:
            out["policies"] = [group["policy"]]
            out["metadata"] = {}
        if ctx.at_least("2.13"):
            out["project_id"] = group["project_id"]
            out["user_id"] = group["user_id"]
        return out

    def _get(self, ctx: RequestContext, group_id: str) -> dict[str, Any]:
        group = self.store.get("server_groups", group_id)
        if group is None or (group["project_id"] != ctx.project_id and not ctx.is_admin):
            raise not_found(f"Instance group {group_id} could not be found.")
        return group

    def create(self, ctx: RequestContext, req: webob.Request) -> Reply:
        data = json_body(req).get("server_group")
        if not isinstance(data, dict):
            raise validation.invalid("server_group", data, f"{data!r} is not of type 'object'")
        name = data.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise validation.invalid("server_group/name", name,
                                     f"{name!r} is not a valid name")
        allowed = POLICIES_2_15 if ctx.at_least("2.15") else POLICIES_2_1
        rules: dict[str, Any] = {}
        if ctx.at_least("2.64"):
            policy = data.get("policy")
            extra = sorted(set(data) - {"name", "policy", "rules"})
            rules = data.get("rules") or {}
            if not isinstance(rules, dict) or (rules and policy != "anti-affinity"):
                raise bad_request("Only anti-affinity policy supports rules.")
        else:
            policies = data.get("policies")
            extra = sorted(set(data) - {"name", "policies"})
            if (not isinstance(policies, list) or len(policies) != 1):
                raise validation.invalid("server_group/policies", policies,
                                         f"{policies!r} is not a list of one policy")
            policy = policies[0]
        if extra:
            raise validation.invalid("server_group", data, "Additional properties are not "
                                     f"allowed ({', '.join(repr(k) for k in extra)} unexpected)")
        if policy not in allowed:
            raise validation.invalid("server_group/policy", policy,
                                     f"{policy!r} is not one of {list(allowed)}")
        quotas = Quotas(self.store)
        limit, used = (quotas.limits(ctx.project_id)["server_groups"],
                       quotas.usage(ctx.project_id)["server_groups"])
        if -1 < limit <= used:
            raise QuotaExceeded("server_groups", 1, used, limit)
        group: dict[str, Any] = {"id": new_uuid(), "name": name, "policy": policy, "rules": rules,
                 "members": [], "project_id": ctx.project_id, "user_id": ctx.user_id}
        with self.store.write() as db:
            db["server_groups"][group["id"]] = group
        return Reply(200, {"server_group": self.view(ctx, group)})

    def list(self, ctx: RequestContext, req: webob.Request) -> Reply:
        groups = self.store.values("server_groups")
        if not (ctx.is_admin and req.GET.get("all_projects")):
            groups = [g for g in groups if g["project_id"] == ctx.project_id]
        offset = req.GET.get("offset", "0")
        if not offset.isdigit():
            raise bad_request(f"Invalid input for query parameters offset. Value: {offset}.")
        groups = validation.page(groups[int(offset):], webob.multidict.MultiDict(
            {k: v for k, v in req.GET.items() if k == "limit"}), key=lambda g: g["id"])
        return Reply(200, {"server_groups": [self.view(ctx, g) for g in groups]})

    def show(self, ctx: RequestContext, req: webob.Request, group_id: str) -> Reply:
        return Reply(200, {"server_group": self.view(ctx, self._get(ctx, group_id))})

    def delete(self, ctx: RequestContext, req: webob.Request, group_id: str) -> Reply:
        self._get(ctx, group_id)
        with self.store.write() as db:
            db["server_groups"].pop(group_id, None)
        return Reply(204)

    # ---- membership (server create / delete) -------------------------------------------------
    def join(self, ctx: RequestContext, group_id: str, server_id: str) -> str | None:
        """Add a new server to its group; the reason it cannot be placed, if any (one host)."""
        group = self._get(ctx, group_id) if group_id else None
        if group is None:
            return None
        with self.store.write() as db:
            live = db["server_groups"].get(group_id)
            if live is None:
                raise ApiError(400, f"Instance group {group_id} could not be found.")
            crowded = live["policy"] == "anti-affinity" and live["members"]
            live["members"].append(server_id)
        if crowded:
            return "No valid host was found. There are not enough hosts available."
        return None

    def leave(self, server_id: str) -> None:
        with self.store.write() as db:
            for group in db["server_groups"].values():
                if server_id in group["members"]:
                    group["members"].remove(server_id)


def add_routes(router: Router, api: ServerGroups) -> None:
    r = router.add
    r("GET", "/os-server-groups", api.list)
    r("POST", "/os-server-groups", api.create)
    r("GET", "/os-server-groups/{group_id}", api.show)
    r("DELETE", "/os-server-groups/{group_id}", api.delete)
