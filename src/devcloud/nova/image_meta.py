"""Image properties as Nova keeps them on an instance: its image_* system metadata, and the
block device mapping a volume-backed snapshot image carries. Shared by create and rebuild."""

from __future__ import annotations

import json
from typing import Any

from devcloud.nova.wsgi import bad_request

GLANCE_BASE_FIELDS = {"id", "name", "status", "visibility", "protected", "checksum", "owner",
                      "size", "virtual_size", "min_ram", "min_disk", "created_at", "updated_at",
                      "tags", "direct_url", "locations", "self", "file", "schema", "disk_format",
                      "container_format", "os_hidden", "os_hash_algo", "os_hash_value", "stores"}


def image_sysmeta(image: dict[str, Any], flavor: dict[str, Any]) -> dict[str, Any]:
    """utils.get_system_metadata_from_image: image properties as image_* system metadata."""
    sysmeta: dict[str, Any] = {}
    for key, value in image.items():
        if key in GLANCE_BASE_FIELDS or key in ("mappings", "block_device_mapping"):
            continue
        sysmeta[f"image_{key}"] = str(value)[:255]
    for key in ("min_ram", "min_disk", "disk_format", "container_format"):
        value = image.get(key)
        if key in ("min_ram", "min_disk") and value is not None:
            value = int(value)  # a volume's image metadata holds strings (Nova's get_image_metadata_from_volume)
        if key == "min_disk":
            value = max(value or 0, flavor["disk"])
        if value is not None:
            sysmeta[f"image_{key}"] = value
    return sysmeta


def image_block_device_mapping(image: dict[str, Any]) -> list[dict[str, Any]]:
    """The block_device_mapping property of a volume-backed snapshot image, as bdm v2 items."""
    raw = image.get("block_device_mapping")
    if not raw:
        return []
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return []
    out = []
    for item in items:
        if item.get("no_device"):
            continue
        uuid_ = item.get("snapshot_id") or item.get("volume_id") or item.get("image_id")
        out.append({"source_type": item.get("source_type") or "snapshot",
                    "destination_type": item.get("destination_type") or "volume",
                    "uuid": uuid_, "boot_index": item.get("boot_index"),
                    "device_name": item.get("device_name"),
                    "volume_size": item.get("volume_size"),
                    "delete_on_termination": item.get("delete_on_termination", False),
                    "volume_type": item.get("volume_type"), "tag": item.get("tag")})
    return out


def check_image_fits_flavor(image: dict[str, Any], flavor: dict[str, Any]) -> None:
    """compute.api._validate_flavor_image_nostatus for a local root disk: the image's size and
    min_disk within the flavor's disk (a flavor disk of 0 takes any), its min_ram within its RAM."""
    size = int(image.get("virtual_size") or image.get("size") or 0)
    if flavor["disk"] and size > flavor["disk"] * 1024**3:
        raise bad_request(f"Flavor's disk is too small for requested image. Flavor disk "
                          f"is {flavor['disk'] * 1024**3} bytes, image is {size} bytes.")
    if int(image.get("min_disk") or 0) > flavor["disk"] > 0:
        raise bad_request("Flavor's disk is too small for requested image.")
    check_image_ram(image, flavor)


def check_image_ram(image: dict[str, Any], flavor: dict[str, Any]) -> None:
    if int(image.get("min_ram") or 0) > flavor["ram"]:
        raise bad_request("Flavor's memory is too small for requested image.")
