"""cinder.conf for the dev cloud, rendered from a few settings.

Everything Cinder would otherwise read from ``/etc/cinder`` (paste pipeline, state, locks,
privsep helpers) is pointed into the state directory or the services venv, so a dev cloud never
depends on, or writes to, the machine's ``/etc``.
"""

from __future__ import annotations

import configparser
import io
from dataclasses import dataclass
from pathlib import Path

BACKEND = "sparse"
"""Name of the file backend (``enabled_backends``); its volume service's host is ``<host>@sparse``."""

CEPH_BACKEND = "ceph"
"""Name of the RBD backend and of its volume type, on a cloud with Ceph only (the default; not
with ``devcloud up --no-ceph``)."""

CINDER_HOST = "devcloud"
"""``[DEFAULT] host``: fixed, so service records and volume hosts survive restarts and renames."""


@dataclass(frozen=True)
class CinderSettings:
    state_dir: Path          # <state>/cinder
    venv: Path               # the services virtualenv
    listen_host: str
    listen_port: int
    keystone_url: str        # e.g. http://127.0.0.1:35357 (no /v3)
    glance_url: str          # e.g. http://127.0.0.1:39292
    service_password: str    # password of the `cinder` service user, project `service`
    region: str = "RegionOne"
    ceph_conf: Path | None = None  # the dev cloud's ceph.conf: adds the RBD backend `ceph`
    ceph_pool: str = "volumes"
    ceph_user: str = "cinder"     # its keyring is found through `keyring` in ceph.conf


def backends(s: CinderSettings) -> list[str]:
    """``enabled_backends``: the file backend, and Cinder's own RBD driver when there is a Ceph."""
    return [BACKEND] + ([CEPH_BACKEND] if s.ceph_conf is not None else [])


def volumes_dir(cinder_state: Path) -> Path:
    """Where the sparse files of volumes and snapshots are kept."""
    return cinder_state / "volumes"


def render(s: CinderSettings) -> str:
    st = s.state_dir
    conf_path = st / "cinder.conf"
    # privsep-helper is started directly (we run as root and there is no sudo); oslo.privsep
    # appends --privsep_context and --privsep_sock_path to this command.
    privsep = f"{s.venv / 'bin' / 'privsep-helper'} --config-file {conf_path}"
    service_auth = {
        "auth_type": "password",
        "auth_url": s.keystone_url,
        "username": "cinder",
        "password": s.service_password,
        "project_name": "service",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
    }
    sections: dict[str, dict[str, str]] = {
        "DEFAULT": {
            "host": CINDER_HOST,
            "my_ip": s.listen_host,
            "transport_url": "fake:/",
            "auth_strategy": "keystone",
            "state_path": str(st),
            "api_paste_config": str(s.venv / "etc" / "cinder" / "api-paste.ini"),
            "rootwrap_config": str(s.venv / "etc" / "cinder" / "rootwrap.conf"),
            # Without it Cinder drops every list filter (`?name=...`) it does not know.
            "resource_query_filters_file":
                str(s.venv / "etc" / "cinder" / "resource_filters.json"),
            "osapi_volume_listen": s.listen_host,
            "osapi_volume_listen_port": str(s.listen_port),
            "osapi_volume_workers": "1",
            "enabled_backends": ",".join(backends(s)),
            "default_volume_type": "__DEFAULT__",
            "glance_api_servers": s.glance_url,
            "image_conversion_dir": str(st / "conversion"),
            # Scheduler stats refresh quickly so capacity and new volumes are seen within seconds.
            "periodic_interval": "10",
            "report_interval": "5",
            "service_down_time": "30",
            "scheduler_driver_init_wait_time": "30",
            # `down` should not wait on in-flight RPCs for oslo.service's default 60 s.
            "graceful_shutdown_timeout": "5",
            "use_stderr": "true",
            "debug": "false",
        },
        "database": {"connection": f"sqlite:///{st / 'cinder.sqlite'}"},
        "keystone_authtoken": {
            "www_authenticate_uri": s.keystone_url,
            "region_name": s.region,
            "service_token_roles_required": "true",
            **service_auth,
        },
        "nova": {"region_name": s.region, "interface": "internal", **service_auth},
        "oslo_concurrency": {"lock_path": str(st / "locks")},
        "coordination": {"backend_url": f"file://{st / 'coordination'}"},
        "oslo_messaging_notifications": {"driver": "noop"},
        "cinder_sys_admin": {"helper_command": privsep},
        "privsep_osbrick": {"helper_command": privsep},
        "os_brick": {"lock_path": str(st / "locks")},
        BACKEND: {
            "volume_driver": "devcloud.cinder.driver.SparseFileDriver",
            "volume_backend_name": BACKEND,
            "sparse_volumes_dir": str(volumes_dir(st)),
        },
    }
    if s.ceph_conf is not None:
        sections[CEPH_BACKEND] = {
            "volume_driver": "cinder.volume.drivers.rbd.RBDDriver",
            "volume_backend_name": CEPH_BACKEND,
            "rbd_ceph_conf": str(s.ceph_conf),
            "rbd_pool": s.ceph_pool,
            "rbd_user": s.ceph_user,
            # Clones and volumes from snapshots stay copy-on-write children, as in production.
            "rbd_flatten_volume_from_snapshot": "false",
            "rados_connect_timeout": "10",
        }
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep option names as written
    for name, options in sections.items():
        if name != "DEFAULT":
            parser.add_section(name)
        for key, value in options.items():
            parser.set(name, key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()
