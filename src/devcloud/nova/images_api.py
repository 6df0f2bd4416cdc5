"""The compute API's `/images` proxy to Glance (nova.api.openstack.compute.images and
image_metadata), which clients below microversion 2.36 still use; from 2.36 on it is 404.

Older tools list, show and delete snapshots and read their metadata through Nova rather than
Glance. Nova translates: Glance's properties are the image's `metadata`, its status one of
ACTIVE/SAVING/DELETED/ERROR/UNKNOWN with a `progress`, `server` the instance a snapshot was made
of, and the filters `server`, `type`, `minRam`, `minDisk`, `changes-since` map onto Glance's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import webob

from devcloud.nova import clients, validation
from devcloud.nova.compute import Compute
from devcloud.nova.image_meta import GLANCE_BASE_FIELDS
from devcloud.nova.views import links
from devcloud.nova.wsgi import ApiError, Reply, RequestContext, Router, bad_request, json_body, not_found

#: The microversion that removed the proxy APIs (images, networks, volumes, ...).
PROXY_REMOVED = "2.36"
STATUS = {"active": "ACTIVE", "queued": "SAVING", "saving": "SAVING", "importing": "SAVING",
          "uploading": "SAVING", "deleted": "DELETED", "pending_delete": "DELETED",
          "killed": "ERROR"}
PROGRESS = {"queued": 25, "saving": 50, "active": 100}
MAX_IMAGE_META = 128


def _date(value: str | None) -> str | None:
    return value[:19] + "Z" if value else value


def properties(image: dict[str, Any]) -> dict[str, Any]:
    """Glance v2's extra attributes: what Nova calls the image's properties (its metadata)."""
    return {k: v for k, v in image.items()
            if k not in GLANCE_BASE_FIELDS and not k.startswith("os_glance")}


class ImagesApi:
    def __init__(self, compute: Compute):
        self.compute = compute

    def _glance(self, ctx: RequestContext) -> clients.Glance:
        if ctx.at_least(PROXY_REMOVED):
            raise not_found("The resource could not be found.")
        return self.compute.glance(ctx.token)

    def _get(self, ctx: RequestContext, image_id: str) -> dict[str, Any]:
        glance = self._glance(ctx)
        try:
            image = glance.get(image_id)
        except clients.UpstreamError as exc:  # a malformed id is Glance's 400; Nova says 404
            if exc.status != 400:
                raise
            image = None
        if image is None:
            raise not_found("Image not found.")
        return image

    def view(self, ctx: RequestContext, image: dict[str, Any]) -> dict[str, Any]:
        """nova.api.openstack.compute.views.images.ViewBuilder.show."""
        meta = properties(image)
        out: dict[str, Any] = {
            "id": image["id"], "name": image.get("name"),
            "minRam": int(image.get("min_ram") or 0), "minDisk": int(image.get("min_disk") or 0),
            "metadata": meta, "created": _date(image.get("created_at")),
            "updated": _date(image.get("updated_at")),
            "status": STATUS.get(image["status"], "UNKNOWN"),
            "progress": PROGRESS.get(image["status"], 0),
            "OS-EXT-IMG-SIZE:size": image.get("size"),
            "links": self._links(ctx, image["id"]),
        }
        if meta.get("instance_uuid"):
            out["server"] = {"id": meta["instance_uuid"],
                             "links": links(ctx, "servers", meta["instance_uuid"])}
        if "auto_disk_config" in meta:
            out["OS-DCF:diskConfig"] = ("AUTO" if str(meta["auto_disk_config"]).lower()
                                        in ("true", "1", "yes", "on") else "MANUAL")
        return out

    def _links(self, ctx: RequestContext, image_id: str) -> list[dict[str, str]]:
        return [*links(ctx, "images", image_id),
                {"rel": "alternate", "type": "application/vnd.openstack.image",
                 "href": f"{self.compute.cfg.glance_url}/images/{image_id}"}]

    # ---- list / show / delete --------------------------------------------------------------
    def _listed(self, ctx: RequestContext, req: webob.Request) -> list[dict[str, Any]]:
        """Nova's SUPPORTED_FILTERS applied to what the caller sees in Glance, newest first."""
        glance = self._glance(ctx)
        q = req.GET
        images = glance.list_all()
        if q.get("name"):
            images = [i for i in images if i.get("name") == q["name"]]
        if q.get("status"):
            images = [i for i in images if i["status"] == q["status"].lower()]
        if q.get("server"):
            server = q["server"].rstrip("/").rsplit("/", 1)[-1]
            images = [i for i in images if i.get("instance_uuid") == server]
        if q.get("type"):
            images = [i for i in images if i.get("image_type") == q["type"]]
        for param, key in (("minRam", "min_ram"), ("minDisk", "min_disk")):
            if q.get(param):
                if not q[param].isdigit():
                    raise bad_request(f"Invalid {param} filter [{q[param]}]")
                images = [i for i in images if int(i.get(key) or 0) >= int(q[param])]
        validation.timestamp("changes-since", q.get("changes-since"))
        if q.get("changes-since"):
            since = q["changes-since"].replace("Z", "")[:19]
            images = [i for i in images if (i.get("updated_at") or "")[:19] >= since]
        images.sort(key=lambda i: (i.get("created_at") or "", i["id"]), reverse=True)
        return validation.page(images, q, key=lambda i: i["id"])

    def _page(self, ctx: RequestContext, req: webob.Request, path: str,
              items: list[dict[str, Any]], views: list[dict[str, Any]]) -> Reply:
        body: dict[str, Any] = {"images": views}
        limit = req.GET.get("limit")
        if limit and items and len(items) == int(limit):
            params = dict(req.GET, marker=items[-1]["id"])
            body["images_links"] = [{"rel": "next", "href": f"{ctx.host_url}/v2.1/{path}?"
                                                            f"{urlencode(params)}"}]
        return Reply(200, body)

    def index(self, ctx: RequestContext, req: webob.Request) -> Reply:
        items = self._listed(ctx, req)
        return self._page(ctx, req, "images", items, [
            {"id": i["id"], "name": i.get("name"), "links": self._links(ctx, i["id"])}
            for i in items])

    def detail(self, ctx: RequestContext, req: webob.Request) -> Reply:
        items = self._listed(ctx, req)
        return self._page(ctx, req, "images/detail", items, [self.view(ctx, i) for i in items])

    def show(self, ctx: RequestContext, req: webob.Request, image_id: str) -> Reply:
        return Reply(200, {"image": self.view(ctx, self._get(ctx, image_id))})

    def delete(self, ctx: RequestContext, req: webob.Request, image_id: str) -> Reply:
        self._get(ctx, image_id)
        try:
            self._glance(ctx).delete(image_id)
        except clients.UpstreamError as exc:
            if exc.status == 403:
                raise ApiError(403, "You are not allowed to delete the image.") from exc
            raise
        return Reply(204)

    # ---- metadata ---------------------------------------------------------------------------
    def _set_properties(self, ctx: RequestContext, image: dict[str, Any],
                        wanted: dict[str, Any], purge: bool) -> dict[str, Any]:
        """Glance update of the properties; `purge` drops those not in `wanted` (update_all)."""
        current = properties(image)
        merged = wanted if purge else {**current, **wanted}
        if len(merged) > MAX_IMAGE_META:
            raise ApiError(403, f"Quota exceeded for metadata_items: Requested {len(merged)}, "
                                f"but already used 0 of {MAX_IMAGE_META} metadata_items")
        ops = [{"op": "remove", "path": f"/{k}"} for k in current if k not in merged]
        ops += [{"op": "add", "path": f"/{k}", "value": str(v)} for k, v in merged.items()]
        updated = self._glance(ctx).patch(image["id"], ops)
        return properties(updated)

    @staticmethod
    def _body(req: webob.Request, key: str) -> dict[str, Any]:
        value = json_body(req).get(key)
        if not isinstance(value, dict):
            raise bad_request("Malformed request body")
        return validation.metadata(key, value)

    def metadata_list(self, ctx: RequestContext, req: webob.Request, image_id: str) -> Reply:
        return Reply(200, {"metadata": properties(self._get(ctx, image_id))})

    def metadata_update(self, ctx: RequestContext, req: webob.Request, image_id: str) -> Reply:
        image = self._get(ctx, image_id)
        meta = self._body(req, "metadata")
        return Reply(200, {"metadata": self._set_properties(ctx, image, meta, purge=False)})

    def metadata_replace(self, ctx: RequestContext, req: webob.Request, image_id: str) -> Reply:
        image = self._get(ctx, image_id)
        meta = self._body(req, "metadata")
        return Reply(200, {"metadata": self._set_properties(ctx, image, meta, purge=True)})

    def metadata_show(self, ctx: RequestContext, req: webob.Request, image_id: str,
                      key: str) -> Reply:
        meta = properties(self._get(ctx, image_id))
        if key not in meta:
            raise not_found(f"Image {image_id} has no metadata item {key}.")
        return Reply(200, {"meta": {key: meta[key]}})

    def metadata_set(self, ctx: RequestContext, req: webob.Request, image_id: str,
                     key: str) -> Reply:
        image = self._get(ctx, image_id)
        meta = self._body(req, "meta")
        if key not in meta:
            raise bad_request("Request body and URI mismatch")
        if len(meta) > 1:
            raise bad_request("Request body contains too many items")
        self._set_properties(ctx, image, meta, purge=False)
        return Reply(200, {"meta": meta})

    def metadata_delete(self, ctx: RequestContext, req: webob.Request, image_id: str,
                        key: str) -> Reply:
        image = self._get(ctx, image_id)
        if key not in properties(image):
            raise not_found(f"Image {image_id} has no metadata item {key}.")
        self._glance(ctx).patch(image_id, [{"op": "remove", "path": f"/{key}"}])
        return Reply(204)


def add_routes(router: Router, api: ImagesApi) -> None:
    r = router.add
    r("GET", "/images", api.index)
    r("GET", "/images/detail", api.detail)
    r("GET", "/images/{image_id}", api.show)
    r("DELETE", "/images/{image_id}", api.delete)
    r("GET", "/images/{image_id}/metadata", api.metadata_list)
    r("POST", "/images/{image_id}/metadata", api.metadata_update)
    r("PUT", "/images/{image_id}/metadata", api.metadata_replace)
    r("GET", "/images/{image_id}/metadata/{key}", api.metadata_show)
    r("PUT", "/images/{image_id}/metadata/{key}", api.metadata_set)
    r("DELETE", "/images/{image_id}/metadata/{key}", api.metadata_delete)
