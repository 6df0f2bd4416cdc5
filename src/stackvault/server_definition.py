"""A server's definition: what a backup record keeps of a server so that a restore can boot it again.

It is part of the repository format (the `source.server` object of a backup record,
docs/repository-format.md), so it is versioned: a definition without `version` was written before
the field existed and is version 1, and one of a newer version is refused with "upgrade stackvault"
rather than read as if its fields meant what they mean here. Reading checks the types of what a
restore relies on, so a record edited on the store is one error line, never a crash halfway through
booting a server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import DamagedRecordError, UsageError

#: The version this stackvault writes and the newest it reads.
DEFINITION_VERSION = 1


@dataclass(frozen=True)
class AttachedVolume:
    """One Cinder volume attached to the server, as it was at the backup."""

    id: str
    device: str  # `/dev/vdb`
    boot_index: int | None = None  # 0 for the boot volume
    size_gb: int | None = None
    volume_type: str | None = None
    name: str | None = None
    bootable: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    volume_image_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def device_name(self) -> str:
        """`vdb`: the disk's name in the backup."""
        return self.device.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ServerDefinition:
    """Everything needed to boot an equivalent server (JSON through `to_dict`)."""

    id: str
    name: str
    boot: str  # `image` or `volume`: what the server booted from
    root_device_name: str = "/dev/vda"
    project_id: str | None = None
    created_at: str | None = None
    flavor: dict[str, Any] = field(default_factory=dict)
    image_id: str | None = None
    key_name: str | None = None
    security_groups: list[str] = field(default_factory=list)
    addresses: dict[str, Any] = field(default_factory=dict)
    ports: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    availability_zone: str | None = None
    volumes: list[AttachedVolume] = field(default_factory=list)
    image_properties: dict[str, Any] = field(default_factory=dict)
    image_properties_source: str = "none"
    version: int = DEFINITION_VERSION

    @property
    def root_device(self) -> str:
        """`vda`: the boot disk's name in the backup."""
        return self.root_device_name.rsplit("/", 1)[-1]

    @property
    def flavor_name(self) -> str:
        return str(self.flavor.get("original_name") or self.flavor.get("name") or "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], backup_id: str) -> ServerDefinition:
        """The definition a backup record holds; DamagedRecordError naming what is wrong with it, or
        UsageError when a newer stackvault wrote it."""
        def bad(problem: str) -> DamagedRecordError:
            return DamagedRecordError(backup_id, f"its server definition {problem}")

        if not isinstance(data, dict):
            raise bad("is not an object")
        version = data.get("version", 1)
        if type(version) is not int or version < 1:
            raise bad(f"has version {version!r}")
        if version > DEFINITION_VERSION:
            raise UsageError(f"backup {backup_id} holds a server definition of version {version}, newer than "
                             f"this stackvault reads ({DEFINITION_VERSION})",
                             "upgrade stackvault to restore it into the cloud; `restore --to file:` reads its "
                             "disks as they are")
        for key in ("id", "name"):
            if not isinstance(data.get(key), str):
                raise bad(f"has no {key}")
        if data.get("boot") not in ("image", "volume"):
            raise bad(f"says it booted from {data.get('boot')!r}")
        kinds: dict[str, type | tuple[type, ...]] = {
            "root_device_name": str, "flavor": dict, "security_groups": list, "addresses": dict, "ports": list,
            "metadata": dict, "tags": list, "volumes": list, "image_properties": dict,
            "image_properties_source": str, "project_id": (str, type(None)), "created_at": (str, type(None)),
            "image_id": (str, type(None)), "key_name": (str, type(None)), "availability_zone": (str, type(None))}
        for key, kind in kinds.items():
            if key in data and not isinstance(data[key], kind):
                raise bad(f"has a {key} of the wrong type")
        if not all(isinstance(p, dict) and isinstance(p.get("network_id"), str) for p in data.get("ports", [])):
            raise bad("has a port that is not an object with a network_id")
        volumes = []
        for v in data.get("volumes", []):
            if not isinstance(v, dict) or not isinstance(v.get("id"), str) or not isinstance(v.get("device"), str):
                raise bad("has a volume without an id and a device")
            volumes.append(AttachedVolume(**{k: v[k] for k in AttachedVolume.__dataclass_fields__ if k in v}))
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in ("volumes", "version")}
        return cls(**known, volumes=volumes, version=version)
