"""Glance and Cinder, called as Nova calls them: with the user's token plus a service token.

Nova acts for the user (images it uploads belong to the user's project), and adds the `nova`
service user's token as `X-Service-Token` so long operations outlive the user token, as Nova
does with `[service_user] send_service_user_token`. Service-to-service calls use each service's
direct URL, so fault rules on the public endpoints do not hit Nova's own traffic.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import requests
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

LOG = logging.getLogger(__name__)

#: Cinder attachment API with `attachment complete` (3.44) as Nova's cinder client uses it.
CINDER_VERSION = "volume 3.44"
CHUNK = 1 << 20


class UpstreamError(Exception):
    """Glance or Cinder answered an error; `status` and Nova-ish `message` kept for the caller."""

    def __init__(self, service: str, method: str, url: str, status: int, body: str):
        self.status = status
        self.body = body
        super().__init__(f"{service} {method} {url} answered {status}: {body[:300]}")


class ServiceToken:
    """The nova service user's token, renewed by keystoneauth before it expires."""

    def __init__(self, auth_url: str, password: str, user: str = "nova", project: str = "service"):
        auth = v3.Password(auth_url=auth_url, username=user, password=password,
                           project_name=project, user_domain_name="Default",
                           project_domain_name="Default")
        self.session = ks_session.Session(auth=auth)
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            return self.session.get_token()  # type: ignore[return-value]  # password auth: never None

    def project_id(self) -> str:
        return self.session.get_project_id()  # type: ignore[return-value]  # project-scoped: never None


class _Http:
    def __init__(self, service: str, token: str, service_token: ServiceToken | None):
        self.service = service
        self.token = token
        self.service_token = service_token

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"X-Auth-Token": self.token, "Accept": "application/json"}
        if self.service_token is not None:
            h["X-Service-Token"] = self.service_token.get()
        h.update(extra or {})
        return h

    def call(self, method: str, url: str, *, body: Any = None, headers: dict | None = None,
             data: Any = None, stream: bool = False, ok: tuple[int, ...] = ()) -> requests.Response:
        hdrs = self.headers(headers)
        if body is not None:
            data = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        resp = requests.request(method, url, headers=hdrs, data=data, stream=stream, timeout=600)
        if resp.status_code >= 400 and resp.status_code not in ok:
            raise UpstreamError(self.service, method, url, resp.status_code, resp.text)
        return resp


class Glance(_Http):
    """Image API v2 calls Nova's image API makes."""

    def __init__(self, url: str, token: str, service_token: ServiceToken | None):
        super().__init__("glance", token, service_token)
        self.url = url.rstrip("/")

    def get(self, image_id: str) -> dict[str, Any] | None:
        resp = self.call("GET", f"{self.url}/v2/images/{image_id}", ok=(404,))
        return None if resp.status_code == 404 else resp.json()

    def create(self, image: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"{self.url}/v2/images", body=image).json()

    def update(self, image_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Set top-level fields and properties (JSON patch `add` replaces existing keys)."""
        return self.patch(image_id, [{"op": "add", "path": f"/{k}", "value": v}
                                     for k, v in changes.items()])

    def patch(self, image_id: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call("PATCH", f"{self.url}/v2/images/{image_id}", data=json.dumps(ops),
                         headers={"Content-Type":
                                  "application/openstack-images-v2.1-json-patch"}).json()

    def list_all(self) -> list[dict[str, Any]]:
        """Every image the caller sees, following Glance's `next` links."""
        images: list[dict[str, Any]] = []
        path: str | None = "/v2/images?limit=1000"
        while path:
            page = self.call("GET", self.url + path).json()
            images += page["images"]
            path = page.get("next")
        return images

    def upload(self, image_id: str, path: Path | None) -> None:
        """Upload the file (or zero bytes, as Nova's force-activate of volume-backed snapshots)."""
        hdrs = {"Content-Type": "application/octet-stream"}
        if path is None:
            self.call("PUT", f"{self.url}/v2/images/{image_id}/file", data=b"", headers=hdrs)
            return
        with open(path, "rb") as fh:
            hdrs["Content-Length"] = str(Path(path).stat().st_size)
            self.call("PUT", f"{self.url}/v2/images/{image_id}/file", data=fh, headers=hdrs)

    def download(self, image_id: str, dest: Path) -> None:
        resp = self.call("GET", f"{self.url}/v2/images/{image_id}/file", stream=True)
        with open(dest, "wb") as out:
            for chunk in resp.iter_content(CHUNK):
                out.write(chunk)

    def delete(self, image_id: str) -> None:
        self.call("DELETE", f"{self.url}/v2/images/{image_id}", ok=(404,))


class Cinder(_Http):
    """Block storage v3 calls Nova's volume API makes (attachments API, forced snapshots)."""

    def __init__(self, url: str, project_id: str, token: str, service_token: ServiceToken | None):
        super().__init__("cinder", token, service_token)
        self.url = f"{url.rstrip('/')}/v3/{project_id}"

    def _c(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        resp = self.call(method, self.url + path, body=body,
                         headers={"OpenStack-API-Version": CINDER_VERSION}, ok=ok)
        if resp.status_code == 404 and 404 in ok:
            return None
        return resp.json() if resp.content else None

    def get_volume(self, volume_id: str) -> dict[str, Any] | None:
        data = self._c("GET", f"/volumes/{volume_id}", ok=(404,))
        return data["volume"] if data else None

    def create_volume(self, size: int, *, name: str = "", image_id: str | None = None,
                      volume_type: str | None = None, snapshot_id: str | None = None,
                      availability_zone: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"size": size, "name": name}
        if image_id:
            body["imageRef"] = image_id
        if snapshot_id:
            body["snapshot_id"] = snapshot_id
        if volume_type:
            body["volume_type"] = volume_type
        if availability_zone:
            body["availability_zone"] = availability_zone
        return self._c("POST", "/volumes", {"volume": body})["volume"]

    def wait_volume(self, volume_id: str, want: str, timeout: float = 600) -> dict[str, Any]:
        """Poll until the volume reaches `want`; fail fast on an error status."""
        deadline = time.monotonic() + timeout
        while True:
            vol = self.get_volume(volume_id)
            if vol is None:
                raise RuntimeError(f"volume {volume_id} disappeared")
            if vol["status"] == want:
                return vol
            if vol["status"].startswith("error"):
                raise RuntimeError(f"volume {volume_id} went to status {vol['status']}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"volume {volume_id} still {vol['status']} after {timeout} s")
            time.sleep(0.5)

    def delete_volume(self, volume_id: str) -> None:
        self._c("DELETE", f"/volumes/{volume_id}", ok=(404,))

    def create_snapshot_force(self, volume_id: str, name: str, description: str | None) -> dict:
        body = {"snapshot": {"volume_id": volume_id, "force": True, "name": name,
                             "description": description}}
        return self._c("POST", "/snapshots", body)["snapshot"]

    def reimage(self, volume_id: str, image_id: str) -> None:
        """os-reimage (3.68) of a volume Nova reserved for it; Cinder tells Nova when it is done
        with the external event `volume-reimaged`."""
        self.call("POST", f"{self.url}/volumes/{volume_id}/action",
                  body={"os-reimage": {"image_id": image_id, "reimage_reserved": True}},
                  headers={"OpenStack-API-Version": "volume 3.68"})

    def limits(self) -> dict[str, Any]:
        return self._c("GET", "/limits")["limits"]["absolute"]

    def attachment_create(self, volume_id: str, instance_uuid: str,
                          connector: dict | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"attachment": {"volume_uuid": volume_id,
                                               "instance_uuid": instance_uuid}}
        if connector is not None:
            body["attachment"]["connector"] = connector
        return self._c("POST", "/attachments", body)["attachment"]

    def attachment_update(self, attachment_id: str, connector: dict) -> dict[str, Any]:
        body = {"attachment": {"connector": connector}}
        return self._c("PUT", f"/attachments/{attachment_id}", body)["attachment"]

    def attachment_complete(self, attachment_id: str) -> None:
        self._c("POST", f"/attachments/{attachment_id}/action", {"os-complete": None})

    def attachment_delete(self, attachment_id: str) -> None:
        self._c("DELETE", f"/attachments/{attachment_id}", ok=(404,))


def connector(host: str, mountpoint: str | None = None) -> dict[str, Any]:
    """What os-brick's get_connector_properties reports on this host, plus the mountpoint."""
    conn: dict[str, Any] = {"platform": "x86_64", "os_type": "linux", "ip": "127.0.0.1",
                            "host": host, "multipath": False, "do_local_attach": False,
                            "system uuid": None, "nvme_native_multipath": False}
    if mountpoint:
        conn["mountpoint"] = mountpoint
    return conn
