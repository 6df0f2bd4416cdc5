"""Settings of the Nova process, written by `launch` to `<state>/nova/nova.json`.

The process runs in the services virtualenv and must not import the devcloud core's context
(it may evolve separately); this small file is the whole interface between the two.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

#: "current": since Xena (the freeze moved after the disk mirror) the failed freeze is logged and the
#: snapshot goes on unquiesced. "strict": the libvirt driver up to Wallaby, where the snapshot fails, its image is
#: deleted and the reason is in the instance action's event.
QUIESCE_MODES = ("current", "strict")


@dataclass
class NovaConfig:
    state_dir: str                 # the dev cloud's state dir (faults.json lives there)
    nova_port: int                 # what Nova binds
    neutron_port: int              # what Neutron binds
    keystone_url: str              # direct Keystone URL (auth_token and the service token)
    glance_url: str                # direct Glance URL
    cinder_url: str                # direct Cinder URL, without /v3
    service_password: str          # password of the `nova` service user
    host: str = "127.0.0.1"
    fast: bool = False
    region: str = "RegionOne"
    proxy_server_name: str = "stackvault-proxy"
    proxy_project_id: str = ""     # project that owns the proxy server (admin)
    proxy_user_id: str = ""
    proxy_device_root: str = ""
    guest_image_cache: str = ""    # where devcloud.guest.images.build_all built the guest images
    #: This host's ceph.conf (the dev cloud's, when it runs Ceph): its `keyring` line gives librbd
    #: the cephx key of the user Cinder names, as libvirt's secret does on a real compute host.
    #: Empty: no Ceph, and attaching an `rbd` volume fails as on a host without the secret.
    ceph_conf: str = ""
    #: Which libvirt driver an image-backed createImage follows when the image has
    #: os_require_quiesce=yes and the guest agent does not freeze (QUIESCE_MODES). Volume-backed
    #: snapshots refuse such a server with 409 in both.
    quiesce: str = "current"
    #: How often and how far apart a detach re-sends the unplug to a guest that has not released
    #: the disk yet (libvirt's device_detach_attempts / device_detach_timeout, 8 x 20 s).
    detach_attempts: int = 8
    detach_interval: float = 20.0

    @property
    def nova_dir(self) -> Path:
        return Path(self.state_dir) / "nova"

    @classmethod
    def load(cls, path: Path) -> NovaConfig:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)
