"""The Nova process: compute v2.1 and the Neutron subset on two threaded WSGI servers.

Run as `python -m devcloud.nova.service <state>/nova/nova.json` in the services virtualenv
(keystonemiddleware, webob, routes, keystoneauth1). Tokens are validated against the real
Keystone by keystonemiddleware's auth_token, as in a real Nova's paste pipeline.
"""

from __future__ import annotations

import logging
import socketserver
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from devcloud.nova import clients, images_api, misc_api, neutron, quotas, server_groups, servers
from devcloud.nova.compute import Compute, iso_z, now
from devcloud.nova.config import NovaConfig
from devcloud.nova.store import Store
from devcloud.nova.wsgi import ApiApp, Router

LOG = logging.getLogger("devcloud.nova")

try:  # written by the devcloud core; Nova works (without injected faults) until it exists
    from devcloud import faults as fault_rules
except ImportError:  # pragma: no cover
    fault_rules = None  # type: ignore[assignment]  # no module: no faults


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # `format` is the stdlib signature's parameter name
        LOG.info("%s %s", self.address_string(), format % args)


def auth_protected(app: Callable, cfg: NovaConfig) -> Callable:
    """Wrap `app` in keystonemiddleware's auth_token, configured like nova.conf's section."""
    from keystonemiddleware import auth_token
    conf = {
        "auth_type": "password", "auth_url": cfg.keystone_url + "/v3",
        "username": "nova", "password": cfg.service_password, "project_name": "service",
        "user_domain_name": "Default", "project_domain_name": "Default",
        "www_authenticate_uri": cfg.keystone_url + "/v3", "delay_auth_decision": "false",
        "service_token_roles_required": "true", "region_name": cfg.region,
        "log_name": "nova", "token_cache_time": "60",
    }
    return auth_token.AuthProtocol(app, conf)


def request_id_filter(app: Callable) -> Callable:
    def wrapped(environ: dict, start_response: Callable) -> Any:
        environ.setdefault("openstack.request_id", f"req-{uuid.uuid4()}")
        return app(environ, start_response)
    return wrapped


def compute_app(cfg: NovaConfig, api_app: Callable) -> Callable:
    protected = request_id_filter(auth_protected(api_app, cfg))

    def dispatch(environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "/").rstrip("/")
        if path in ("", "/v2.1", "/v2"):
            return misc_api.versions_app(environ, start_response)
        return protected(environ, start_response)
    return dispatch


def network_app(cfg: NovaConfig, api_app: Callable) -> Callable:
    protected = request_id_filter(auth_protected(api_app, cfg))

    def dispatch(environ: dict, start_response: Callable) -> Any:
        if environ.get("PATH_INFO", "/").rstrip("/") == "":
            environ["HTTP_X_IDENTITY_STATUS"] = "Confirmed"
            environ.setdefault("HTTP_X_PROJECT_ID", "anonymous")
            return api_app(environ, start_response)
        return protected(environ, start_response)
    return dispatch


def ensure_proxy_server(cfg: NovaConfig, store: Store, net: neutron.Networking) -> None:
    """The backup proxy `stackvault-proxy` (no VM): created once in the admin project."""
    if not cfg.proxy_project_id:
        return
    if any(s["name"] == cfg.proxy_server_name and s["project_id"] == cfg.proxy_project_id
           for s in store.values("servers")):
        return
    server_id = str(uuid.uuid4())
    flavor = store.get("flavors", "1")
    private = next(n for n in store.values("networks") if n["name"] == neutron.PRIVATE_NETWORK)
    port = net.create_port(cfg.proxy_project_id, {"network_id": private["id"],
                                                  "device_id": server_id,
                                                  "device_owner": "compute:nova"})
    ts = iso_z(now())
    with store.write() as db:
        counter = db["meta"].get("instance_counter", 0) + 1
        db["meta"]["instance_counter"] = counter
        db["servers"][server_id] = {
            "id": server_id, "name": cfg.proxy_server_name, "project_id": cfg.proxy_project_id,
            "user_id": cfg.proxy_user_id, "created": ts, "updated": ts,
            "launched_at": now().strftime("%Y-%m-%dT%H:%M:%S.%f"), "vm_state": "active",
            "task_state": None, "power_state": 1, "flavor": flavor, "image_ref": "",
            "key_name": None, "metadata": {"devcloud_role": "backup-proxy"}, "tags": [],
            "system_metadata": {}, "description": "stackvault backup proxy (devcloud, no VM)",
            "hostname": cfg.proxy_server_name, "availability_zone": "nova", "config_drive": "",
            "user_data": None, "access_ipv4": "", "access_ipv6": "",
            "security_groups": ["default"], "bdms": [], "ports": [port["id"]],
            "root_device_name": "/dev/vda", "fault": None, "proxy": True, "locked": False,
            "locked_reason": None, "instance_name": f"instance-{counter:08x}",
            "reservation_id": "r-proxy000", "scheduler_hints": {}}
        db["meta"]["proxy_server_id"] = server_id
    (cfg.nova_dir / "proxy-server-id").write_text(server_id + "\n")


def build(cfg: NovaConfig) -> tuple[Callable, Callable, Compute]:
    store = Store(cfg.nova_dir / "state.json")
    service_token = clients.ServiceToken(cfg.keystone_url + "/v3", cfg.service_password)
    compute = Compute(cfg, store, service_token)
    net = neutron.Networking(store)
    misc_api.seed_flavors(store)
    net.seed(cfg.proxy_project_id or "admin")
    ensure_proxy_server(cfg, store, net)
    recover(store, compute)

    def nova_faults(method: str, path: str) -> Any:
        if fault_rules is None:
            return None
        return fault_rules.match(Path(cfg.state_dir), "nova", method, path,
                                 kinds=fault_rules.NOVA_KINDS)

    router = Router()
    servers_api = servers.ServersApi(compute, net, nova_faults)
    servers.add_routes(router, servers_api)
    quotas.add_routes(router, servers_api.quotas)
    server_groups.add_routes(router, servers_api.server_groups)
    misc_api.add_routes(router, misc_api.MiscApi(store))
    images_api.add_routes(router, images_api.ImagesApi(compute))
    nova = ApiApp(router, service="nova", prefix="/v2.1", microversions=True,
                  project_in_path=True)
    neutron_api = ApiApp(neutron.make_router(net), service="neutron")
    return compute_app(cfg, nova), network_app(cfg, neutron_api), compute


def recover(store: Store, compute: Compute) -> None:
    """After a restart, settle what was in flight as Nova's _init_instance does (builds fail,
    task states are cleared), then sync power states as _sync_power_states does: an ACTIVE
    server whose guest is gone (e.g. after `devcloud down`) becomes SHUTOFF, ready for `start`."""
    with store.write() as db:
        for server in db["servers"].values():
            if server["vm_state"] == "building":
                server["vm_state"] = "error"
                server["fault"] = {"code": 500, "created": iso_z(now()), "details": "",
                                   "message": "Instance was building when Nova restarted"}
            server["task_state"] = None
            if server["vm_state"] == "active" and not server.get("proxy"):
                try:
                    running = compute.hypervisor.is_running(server["id"])
                except Exception:
                    running = False
                if not running:
                    server.update(vm_state="stopped", power_state=4)
    # The proxy's RBD volumes were unmounted by `devcloud down` (their by-id links point into the
    # mounts): mount them again, in the background, since rbd-fuse waits for a Ceph that is slow.
    for server in store.values("servers"):
        if server.get("proxy"):
            for bdm in server["bdms"]:
                if bdm.get("rbd"):
                    compute.spawn(compute.proxy_link, bdm)


def serve(app: Callable, host: str, port: int) -> ThreadingWSGIServer:
    httpd = make_server(host, port, app, server_class=ThreadingWSGIServer,
                        handler_class=QuietHandler)
    threading.Thread(target=httpd.serve_forever, name=f"http-{port}", daemon=True).start()
    return httpd


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = NovaConfig.load(Path(argv[0]))
    nova_app, neutron_app, _ = build(cfg)
    serve(neutron_app, cfg.host, cfg.neutron_port)
    httpd = serve(nova_app, cfg.host, cfg.nova_port)
    LOG.info("nova on %s:%s, neutron on %s:%s", cfg.host, cfg.nova_port, cfg.host,
             cfg.neutron_port)
    threading.Event().wait()
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
