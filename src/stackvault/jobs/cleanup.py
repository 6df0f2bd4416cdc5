"""`stackvault cleanup`: find and remove what killed or failed jobs left in the cloud, by its tag.

The Cinder snapshots kept as the bases of the next changed-block backups (tagged `stackvault_base`,
cloud/rbd.py) are no leftovers: they are listed, and deleted only when asked (`--bases`), e.g. for a
volume that is no longer backed up and that its owner wants to delete (Cinder refuses to delete a
volume that has snapshots).
"""

from __future__ import annotations

import json
from typing import Any

from openstack import exceptions as os_exc

from ..cloud.inventory import volume_matches
from ..cloud.rbd import BASE_KEY, bases, delete_base
from ..cloud.snapshots import TEMP_KEY, delete_image, delete_volume_snapshot
from ..cloud.volumes import delete_volume
from ..errors import UsageError

#: `cleanup --bases` waits longer than a backup for each base: it is asked to release them.
CLEANUP_BASE_WAIT_S = 120.0


def find_leftovers(conn) -> dict[str, list[dict]]:
    """Images, volumes and Cinder snapshots carrying the stackvault temporary tag."""
    images = []
    for image in conn.image.images():
        props = image.properties or {}
        if TEMP_KEY in props:
            mapping = props.get("block_device_mapping") or []
            if isinstance(mapping, str):
                mapping = json.loads(mapping)
            images.append({"id": image.id, "name": image.name, "job": props[TEMP_KEY],
                           "snapshots": [m["snapshot_id"] for m in mapping if m.get("snapshot_id")]})
    volumes = [{"id": v.id, "name": v.name, "job": (v.metadata or {})[TEMP_KEY], "status": v.status}
               for v in conn.block_storage.volumes(details=True) if TEMP_KEY in (v.metadata or {})]
    nova_made = {s for img in images for s in img["snapshots"]}
    snapshots = [{"id": s.id, "name": s.name, "job": (s.metadata or {}).get(TEMP_KEY, "")}
                 for s in conn.block_storage.snapshots(details=True)
                 if (TEMP_KEY in (s.metadata or {}) or s.id in nova_made) and BASE_KEY not in (s.metadata or {})]
    return {"images": images, "volumes": volumes, "snapshots": snapshots}


def cleanup(conn, *, dry_run: bool = False, proxy_server: str | None = None, release: bool = False,
            volumes: list[str] | None = None, repository: str | None = None) -> dict:
    """Delete leftovers: volumes first (they may depend on snapshots), then snapshots, then images.
    Retained bases are listed under `bases` and deleted only with `release`: those of the `volumes`
    (ids, names, globs) and of `repository` (e.g. one no longer used), or all; each such volume's next
    backup then reads it in full once. Naming a volume or repository that no base belongs to is a
    usage error: a typo must not look like a release.

    What still cannot be deleted is listed in `failed` (the CLI then exits non-zero).
    """
    found: dict[str, Any] = find_leftovers(conn)
    kept = bases(conn)
    chosen = chosen_bases(conn, kept, volumes, repository) if release else []
    failed: list[str] = []
    if not dry_run:
        proxy = conn.compute.find_server(proxy_server, ignore_missing=True) if proxy_server and any(
            v["status"] == "in-use" for v in found["volumes"]) else None
        for vol in found["volumes"]:
            if vol["status"] == "in-use" and proxy is not None:
                try:
                    conn.compute.delete_volume_attachment(proxy.id, vol["id"])
                except os_exc.SDKException:
                    pass  # not attached to this proxy: deleting the volume says why it cannot go
            delete_volume(conn, vol["id"], leftovers=failed)
        for snap in found["snapshots"]:
            delete_volume_snapshot(conn, snap["id"], leftovers=failed)
        for image in found["images"]:
            delete_image(conn, image["id"], failed)
        for base in chosen:
            outcome = delete_base(conn, base["id"], CLEANUP_BASE_WAIT_S)
            if outcome == "refused":
                failed.append(f"Cinder snapshot {base['id']}: Cinder refused to delete it (a volume was cloned "
                              "from it: delete or flatten that volume first)")
            elif outcome != "deleted":
                failed.append(f"Cinder snapshot {base['id']}: {outcome}")
    found["bases"] = [b for b in kept if b not in chosen]
    found["bases_released"] = chosen
    found["dry_run"] = dry_run
    found["failed"] = failed
    return found


def chosen_bases(conn, kept: list[dict], volumes: list[str] | None, repository: str | None) -> list[dict]:
    """The bases `cleanup --bases` releases: all, or those of the named volumes and repository."""
    chosen = kept
    if repository is not None:
        chosen = [b for b in chosen if b["repository"] == repository]
        if not chosen:
            held = ", ".join(sorted({b["repository"] for b in kept})) or "none"
            raise UsageError(f"no retained base snapshot belongs to repository {repository}",
                             f"bases are kept for the repositories: {held}")
    if volumes:
        named = volume_matches(conn, volumes)
        for pattern, ids in named.items():
            if not any(b["volume_id"] in ids for b in chosen):
                raise UsageError(f"no retained base snapshot{' of repository ' + repository if repository else ''} "
                                 f"is of volume {pattern}",
                                 "`stackvault cleanup --dry-run` lists the bases and their volumes")
        wanted = set().union(*named.values())
        chosen = [b for b in chosen if b["volume_id"] in wanted]
    return chosen
