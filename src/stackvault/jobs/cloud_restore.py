"""Restoring into OpenStack: a disk to a new Glance image or Cinder volume, a backup to a new server.

Restored images carry the original image properties (so a restored server keeps its guest agent
channel and quiesce policy); restored boot volumes are bootable and carry the image metadata Nova
reads. Nothing existing is overwritten unless asked (`--force`); on failure, what the restore created
is deleted.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable
from typing import Any

from ..cloud.connection import CloudError
from ..cloud.handover import hand_over_volume
from ..cloud.images import image_exists, upload_image
from ..cloud.servers import (
    ServerSpec,
    boot_server,
    delete_server,
    find_flavor_id,
    find_network_id,
    find_server,
    get_server,
    image_id_of,
    rebuild_server,
    server_exists,
)
from ..cloud.snapshots import delete_image
from ..cloud.volumes import (
    attached_to_proxy,
    create_temp_volume,
    delete_volume,
    keep_volume,
    make_bootable,
    volume_exists,
)
from ..engine.manifest import BackupRecord, DiskRecord
from ..engine.restore import DeviceTarget, FileTarget, restore_disk
from ..errors import UsageError
from ..server_definition import ServerDefinition
from .context import JobContext

GiB = 1 << 30
# Properties Glance or Nova own, or that describe the snapshot rather than the disk.
NOT_CARRIED = {"block_device_mapping", "bdm_v2", "root_device_name", "image_location", "image_state", "image_type",
               "instance_uuid", "owner_id", "owner_project_name", "owner_user_name", "user_id", "base_image_ref",
               "boot_roles", "os_hash_algo", "os_hash_value", "os_hidden", "stores", "stackvault_temp",
               "checksum", "size", "virtual_size", "direct_url", "locations", "owner", "protected",
               "visibility", "status", "tags", "id", "name", "disk_format", "container_format", "min_disk",
               "min_ram", "created_at", "updated_at", "file", "schema", "self"}


def carried_properties(props: dict) -> dict:
    return {k: str(v) for k, v in props.items() if not k.startswith("_") and k not in NOT_CARRIED and v is not None}


def _definition(record: BackupRecord) -> ServerDefinition | None:
    """The server the backup is of, or None for a backup of a volume or a file."""
    data = (record.source or {}).get("server")
    return None if data is None else ServerDefinition.from_dict(data, record.backup_id)


def _disk_properties(record: BackupRecord, disk: DiskRecord) -> dict:
    """Image properties that belong with this disk: the server's for its boot disk."""
    definition = _definition(record)
    if definition is None:
        return dict(((record.source or {}).get("volume") or {}).get("volume_image_metadata") or {})
    return definition.image_properties if disk.name == definition.root_device else {}


def _refuse_existing(exists: Callable[[Any, str], bool], conn, kind: str, name: str, force: bool) -> None:
    if not force and exists(conn, name):
        raise UsageError(f"a {kind} named {name!r} exists", "choose another name or pass --force")


def restore_to_image(ctx: JobContext, conn, record: BackupRecord, disk: DiskRecord, name: str, *,
                     force: bool = False, progress=None) -> dict:
    _refuse_existing(image_exists, conn, "Glance image", name, force)
    tmpdir = os.path.join(str(ctx.settings.workdir), "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    path = os.path.join(tmpdir, f"restore-{uuid.uuid4().hex[:8]}.qcow2")
    try:
        stats = restore_disk(ctx.repo, ctx.repo.get_index(disk), FileTarget(path, "qcow2"),
                             workers=ctx.settings.workers,
                             progress=progress(disk.name, disk.size) if progress else None)
        props = carried_properties(_disk_properties(record, disk))
        props["stackvault_backup"] = record.backup_id
        image_id = upload_image(conn, name, path, disk_format="qcow2", properties=props,
                                what=f"restored disk {disk.name}", timeout_s=ctx.settings.cloud.timeout)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return {"kind": "image", "id": image_id, "name": name, "disk": disk.name, "bytes_written": stats.bytes_written,
            "properties": props}


def restore_to_volume(ctx: JobContext, conn, record: BackupRecord, disk: DiskRecord, name: str, *,
                      force: bool = False, volume_type: str | None = None, progress=None, handover=None) -> dict:
    """The volume is made and written in `conn`'s project (attached to the proxy's server); `handover`,
    a connection into another project, then receives it through a Cinder volume transfer."""
    cloud = ctx.settings.cloud
    if not cloud.proxy_server:
        raise UsageError("restoring to a volume attaches it to this proxy's server",
                         "set proxy_server in [cloud]")
    _refuse_existing(volume_exists, conn, "volume", name, force)
    size_gb = max(1, math.ceil(disk.size / GiB))
    extra = {"volume_type": volume_type} if volume_type else {}
    vol = create_temp_volume(conn, "restore", size_gb=size_gb, name=name, timeout_s=cloud.timeout, **extra)
    try:
        keep_volume(conn, vol.id)
        with attached_to_proxy(conn, vol.id, cloud.proxy_server, cloud.device_root, cloud.timeout) as path:
            stats = restore_disk(ctx.repo, ctx.repo.get_index(disk), DeviceTarget(path), workers=ctx.settings.workers,
                                 progress=progress(disk.name, disk.size) if progress else None)
        props = carried_properties(_disk_properties(record, disk))
        if props:
            make_bootable(conn, vol.id, props)
        if handover is not None:
            hand_over_volume(conn, handover, vol.id)
    except BaseException:
        delete_volume(conn, vol.id, cloud.timeout)
        raise
    return {"kind": "volume", "id": vol.id, "name": name, "disk": disk.name, "size_gb": size_gb,
            "bytes_written": stats.bytes_written, "bootable": bool(props)}


def restore_server(ctx: JobContext, conn, record: BackupRecord, name: str, *, flavor: str | None = None,
                   network: str | None = None, key_name: str | None = None, force: bool = False,
                   progress=None, target=None) -> dict:
    """`target`, a connection into another project, is where the server, its images and (handed over)
    its volumes land; `conn` only writes volumes through the proxy. Without it, both are `conn`."""
    into = target or conn
    definition = _definition(record)
    if definition is None:
        raise UsageError(f"backup {record.backup_id} is not of a server",
                         "restore its disk with --to volume:/image:/file:")
    _refuse_existing(server_exists, into, "server", name, force)
    cloud = ctx.settings.cloud
    flavor_id = find_flavor_id(into, flavor or definition.flavor_name)
    if flavor_id is None:
        raise UsageError(f"flavor {flavor or definition.flavor_name!r} does not exist",
                         "pass --flavor NAME of an existing flavor")
    networks = [{"uuid": network}] if network else [{"uuid": n} for n in
                                                   dict.fromkeys(p["network_id"] for p in definition.ports)]
    network_id = find_network_id(into, network) if network else None
    if network_id is not None:
        networks = [{"uuid": network_id}]
    boot_dev = definition.root_device
    made: list[tuple[str, str, Any]] = []  # (kind, id, connection) to delete if the restore fails
    restored = []
    try:
        boot_image = None
        bdm = []
        volumes_by_dev = {v.device_name: v for v in definition.volumes}
        for disk in record.disks:
            if disk.name == boot_dev and definition.boot == "image":
                out = restore_to_image(ctx, into, record, disk, f"{name}-{disk.name}", force=force, progress=progress)
                made.append(("image", out["id"], into))
                boot_image = out["id"]
            else:
                vol = volumes_by_dev.get(disk.name)
                out = restore_to_volume(ctx, conn, record, disk, f"{name}-{disk.name}", force=force,
                                        volume_type=vol.volume_type if vol else None, progress=progress,
                                        handover=target)
                made.append(("volume", out["id"], into))
                bdm.append({"uuid": out["id"], "source_type": "volume", "destination_type": "volume",
                            "boot_index": 0 if disk.name == boot_dev else -1, "delete_on_termination": False,
                            "device_name": vol.device if vol else None})
            restored.append(out)
        bdm.sort(key=lambda b: (b["boot_index"] != 0, b.get("device_name") or ""))
        if bdm and boot_image:
            bdm.insert(0, {"uuid": boot_image, "source_type": "image", "destination_type": "local",
                           "boot_index": 0, "delete_on_termination": True})
        spec = ServerSpec(name=name, flavor_id=flavor_id, networks=networks or "auto",
                          metadata={**definition.metadata, "stackvault_backup": record.backup_id},
                          image_id=boot_image, block_device_mapping=bdm,
                          key_name=key_name or definition.key_name,
                          security_groups=list(definition.security_groups),
                          availability_zone=definition.availability_zone)
        try:
            server = boot_server(into, spec, cloud.timeout, created=lambda sid: made.append(("server", sid, into)))
        except CloudError as exc:
            raise CloudError(exc.message, "check flavor, network and quota; the restored disks were removed") from None
    except BaseException:
        _undo(made, cloud.timeout)
        raise
    return {"kind": "server", "id": server.id, "name": name, "backup_id": record.backup_id, "disks": restored}


#: The states in which Nova rebuilds a server (it refuses the others with 409).
REBUILDABLE = ("ACTIVE", "SHUTOFF", "ERROR")


def restore_in_place(ctx: JobContext, conn, record: BackupRecord, name_or_id: str, *, force: bool = False,
                     progress=None) -> dict:
    """The backup's root disk put back into the existing server through Nova's rebuild: the server keeps
    its id, ports, addresses and attached volumes (which are not rewritten: they are live disks of the
    server; `--to volume:` restores them beside it). The restored root disk is uploaded as an image
    first, so nothing of the server is touched before all of its data is in the cloud; the image stays
    (Nova reads it again for a later evacuation or resize).

    Refused, before anything is made, when the server is not there, boots from a volume (a rebuild
    cannot put a volume back), is locked, is in a state Nova does not rebuild, or is not the server the
    backup was made of (unless `force`)."""
    definition = _definition(record)
    if definition is None:
        raise UsageError(f"backup {record.backup_id} is not of a server",
                         "restore its disk with --to volume:/image:/file:")
    server = find_server(conn, name_or_id)
    if server is None:
        raise UsageError(f"server {name_or_id!r} does not exist",
                         f"restore to a new server with --to server:{name_or_id} without --in-place")
    if definition.boot == "volume":
        raise UsageError(f"backup {record.backup_id} is of a server that boots from a volume: a rebuild "
                         "cannot put its volume back", "restore it as a new server with --to server:NEWNAME")
    backed_up = record.tags.get("server_id")
    if backed_up != server.id and not force:
        raise UsageError(f"backup {record.backup_id} is of server {backed_up}, not of {server.name} ({server.id})",
                         "pass --force to put it on this server anyway")
    if server.is_locked:
        raise UsageError(f"server {server.name} is locked" + (f" ({server.locked_reason})" if server.locked_reason
                                                              else ""),
                         f"unlock it first (`openstack server unlock {server.id}`)")
    if server.status not in REBUILDABLE or server.task_state:
        state = server.task_state or server.status
        raise UsageError(f"server {server.name} is {state}: Nova rebuilds only an ACTIVE, SHUTOFF or ERROR "
                         "server", "wait until its task ends, or stop it")
    root = record.disk(definition.root_device)
    image = restore_to_image(ctx, conn, record, root, f"{server.name}-{record.backup_id}", force=force,
                             progress=progress)
    metadata = {**(server.metadata or {}), "stackvault_backup": record.backup_id}
    try:
        rebuild_server(conn, server.id, image["id"], metadata, ctx.settings.cloud.timeout)
    except CloudError as exc:
        after = get_server(conn, server.id)
        untouched = after.status == server.status and not after.task_state
        if untouched and image_id_of(after) != image["id"]:
            delete_image(conn, image["id"])  # refused: the server is as it was, the image is of no use
            raise
        raise CloudError(exc.message, f"the server is {after.task_state or after.status}; image {image['id']} "
                                      "holds the restored disk: rebuild it from that image again") from None
    kept = [v.id for v in definition.volumes]
    return {"kind": "server", "id": server.id, "name": server.name, "backup_id": record.backup_id,
            "in_place": True, "disks": [image], "kept_volumes": kept}


def _undo(made: list[tuple[str, str, Any]], timeout_s: float) -> None:
    """Remove what a failed restore made, newest first (the server before the disks it boots from)."""
    for kind, obj_id, conn in reversed(made):
        if kind == "server":
            delete_server(conn, obj_id, timeout_s)
        elif kind == "volume":
            delete_volume(conn, obj_id, timeout_s)
        elif kind == "image":
            delete_image(conn, obj_id)
