"""What killed or failed jobs left in the cloud, found by the job tag (`stackvault_temp`).

Images (with the Cinder snapshots Nova made beside a volume-backed server's image, which carry no tag
of their own), temporary volumes, and tagged Cinder snapshots; the snapshots kept as the bases of the
next changed-block backups (`stackvault_base`, cloud/rbd.py) are no leftovers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .connection import cloud_call
from .rbd import BASE_KEY
from .snapshots import TEMP_KEY


@dataclass(frozen=True)
class TempImage:
    id: str
    name: str
    job: str
    snapshots: list[str] = field(default_factory=list)  # Nova's Cinder snapshots listed in block_device_mapping


@dataclass(frozen=True)
class TempVolume:
    id: str
    name: str
    job: str
    status: str  # in-use: still attached to a proxy, detached before it is deleted


@dataclass(frozen=True)
class TempSnapshot:
    id: str
    name: str
    job: str  # empty for a snapshot Nova made


@dataclass(frozen=True)
class Leftovers:
    images: list[TempImage]
    volumes: list[TempVolume]
    snapshots: list[TempSnapshot]


def find_leftovers(conn) -> Leftovers:
    images = []
    for image in cloud_call("list images", lambda: list(conn.image.images())):
        props = image.properties or {}
        if TEMP_KEY not in props:
            continue
        mapping = props.get("block_device_mapping") or []
        if isinstance(mapping, str):
            mapping = json.loads(mapping)
        images.append(TempImage(image.id, image.name, props[TEMP_KEY],
                                [m["snapshot_id"] for m in mapping if m.get("snapshot_id")]))
    volumes = [TempVolume(v.id, v.name, (v.metadata or {})[TEMP_KEY], v.status)
               for v in cloud_call("list volumes", lambda: list(conn.block_storage.volumes(details=True)))
               if TEMP_KEY in (v.metadata or {})]
    nova_made = {s for image in images for s in image.snapshots}
    snapshots = [TempSnapshot(s.id, s.name, (s.metadata or {}).get(TEMP_KEY, ""))
                 for s in cloud_call("list volume snapshots", lambda: list(conn.block_storage.snapshots(details=True)))
                 if (TEMP_KEY in (s.metadata or {}) or s.id in nova_made) and BASE_KEY not in (s.metadata or {})]
    return Leftovers(images, volumes, snapshots)
