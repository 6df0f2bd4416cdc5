"""`stackvault cleanup`: find and remove what killed or failed jobs left in the cloud, by its tag.

The Cinder snapshots kept as the bases of the next changed-block backups (tagged `stackvault_base`,
cloud/rbd.py) are no leftovers: they are listed, and deleted only when asked (`--bases`), e.g. for a
volume that is no longer backed up and that its owner wants to delete (Cinder refuses to delete a
volume that has snapshots).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..cloud import leftovers
from ..cloud.inventory import volume_matches
from ..cloud.rbd import bases, delete_base
from ..cloud.servers import detach_volume, find_server_id
from ..cloud.snapshots import delete_image, delete_volume_snapshot
from ..cloud.volumes import delete_volume
from ..errors import UsageError

#: `cleanup --bases` waits longer than a backup for each base: it is asked to release them.
CLEANUP_BASE_WAIT_S = 120.0


def find_leftovers(conn) -> dict[str, list[dict]]:
    """Images, volumes and Cinder snapshots carrying the stackvault temporary tag, as the report lists them."""
    found = leftovers.find_leftovers(conn)
    return {"images": [asdict(i) for i in found.images], "volumes": [asdict(v) for v in found.volumes],
            "snapshots": [asdict(s) for s in found.snapshots]}


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
        proxy = find_server_id(conn, proxy_server) if proxy_server and any(
            v["status"] == "in-use" for v in found["volumes"]) else None
        for vol in found["volumes"]:
            if vol["status"] == "in-use" and proxy is not None:
                detach_volume(conn, proxy, vol["id"])  # not attached to this proxy: deleting it says why it stays
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
