"""A server's definition read from the cloud (stackvault.server_definition holds its type and format)."""

from __future__ import annotations

from openstack import exceptions as os_exc

from ..server_definition import AttachedVolume, ServerDefinition
from .connection import cloud_call


def _safe(fn, default=None):
    try:
        return fn()
    except os_exc.SDKException:
        return default


def image_properties(conn, server, volumes: list[AttachedVolume]) -> tuple[dict, str]:
    """The image properties that govern the server, and where they came from.

    A volume-backed server's boot volume keeps a copy of its image's properties
    (`volume_image_metadata`), which is what Nova applied; an image-backed server's are those of its
    image now, which may have changed since the server was created.
    """
    boot = next((v for v in volumes if v.boot_index == 0), None)
    if boot is not None and boot.volume_image_metadata:
        return dict(boot.volume_image_metadata), f"volume {boot.id}"
    image_id = (server.image or {}).get("id") if isinstance(server.image, dict) else None
    if not image_id:
        return {}, "none"
    image = _safe(lambda: cloud_call(f"get image {image_id}", lambda: conn.image.get_image(image_id)))
    if image is None:
        return {}, f"image {image_id} (deleted)"
    props = dict(image.properties or {})
    for key in ("hw_qemu_guest_agent", "os_require_quiesce"):
        if getattr(image, key, None) is not None:
            props[key] = getattr(image, key)
    props.update({"_image_name": image.name, "_image_updated_at": image.updated_at,
                  "_disk_format": image.disk_format})
    return props, f"image {image_id}"


def server_definition(conn, server) -> ServerDefinition:
    """Everything needed to boot an equivalent server."""
    attachments = _safe(lambda: cloud_call(f"list volume attachments of server {server.id}",
                                           lambda: list(conn.compute.volume_attachments(server))), []) or []
    root_device = getattr(server, "root_device_name", None) or "/dev/vda"
    volumes = []
    for att in attachments:
        vol = _safe(lambda att=att: cloud_call(f"get volume {att.volume_id}",
                                               lambda: conn.block_storage.get_volume(att.volume_id)))
        device = att.device or ""
        volumes.append(AttachedVolume(
            id=att.volume_id,
            device=device,
            boot_index=0 if device == root_device else None,
            size_gb=getattr(vol, "size", None),
            volume_type=getattr(vol, "volume_type", None),
            name=getattr(vol, "name", None),
            bootable=str(getattr(vol, "is_bootable", "")).lower() == "true",
            metadata=dict(getattr(vol, "metadata", None) or {}),
            volume_image_metadata=dict(getattr(vol, "volume_image_metadata", None) or {}),
        ))
    volumes.sort(key=lambda v: v.device)
    ports = []
    for port in _safe(lambda: cloud_call(f"list ports of server {server.id}",
                                         lambda: list(conn.network.ports(device_id=server.id))), []) or []:
        ports.append({"id": port.id, "network_id": port.network_id, "mac_address": port.mac_address,
                      "fixed_ips": [dict(ip) for ip in port.fixed_ips or []],
                      "security_group_ids": list(port.security_group_ids or [])})
    props, props_source = image_properties(conn, server, volumes)
    flavor = dict(server.flavor or {})
    image = server.image if isinstance(server.image, dict) else {}
    return ServerDefinition(
        id=server.id,
        name=server.name,
        project_id=server.project_id,
        created_at=server.created_at,
        flavor={k: flavor.get(k) for k in ("original_name", "name", "id", "vcpus", "ram", "disk", "ephemeral",
                                           "swap", "extra_specs") if k in flavor},
        image_id=image.get("id") or None,
        boot="image" if image.get("id") else "volume",
        key_name=server.key_name,
        security_groups=sorted({sg.get("name") for sg in server.security_groups or [] if sg.get("name")}),
        addresses=server.addresses or {},
        ports=ports,
        metadata=dict(server.metadata or {}),
        tags=list(getattr(server, "tags", None) or []),
        availability_zone=server.availability_zone,
        root_device_name=root_device,
        volumes=volumes,
        image_properties=props,
        image_properties_source=props_source,
    )
