"""Choosing what to back up: servers and volumes by id, name glob, project, tags or metadata.

Several proxies may split one selection between them (docs/several-proxies.md): by availability zone,
or by shard, K of N. A shard is decided by a hash of the server's (or volume's) id alone, so N proxies
given 1/N .. N/N cover every server exactly once, and a new server moves no other between proxies.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field

from ..errors import NotFoundError
from .connection import cloud_call


@dataclass
class Selection:
    servers: list[str] = field(default_factory=list)  # ids, names or name globs
    volumes: list[str] = field(default_factory=list)
    all_servers: bool = False
    tags: list[str] = field(default_factory=list)  # every tag must be present
    metadata: dict[str, str] = field(default_factory=dict)  # every pair must match
    exclude: list[str] = field(default_factory=list)  # ids, names or globs
    project: str | None = None  # a project id: needs an admin user
    availability_zones: list[str] = field(default_factory=list)  # this proxy's AZs (empty: every AZ)
    shard: tuple[int, int] | None = None  # this proxy's share (K, N) of the servers and volumes

    def empty(self) -> bool:
        return not (self.servers or self.volumes or self.all_servers or self.tags or self.metadata)

    def scope(self) -> dict:
        """This proxy's share, for the job report: {} when it takes everything selected."""
        out: dict = {}
        if self.availability_zones:
            out["availability_zones"] = list(self.availability_zones)
        if self.shard:
            out["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        return out

    def covers(self, item) -> bool:  # an openstacksdk server or volume
        """Whether `item` is this proxy's to back up (and not another's, by AZ or shard)."""
        if self.availability_zones and getattr(item, "availability_zone", None) not in self.availability_zones:
            return False
        return self.shard is None or shard_of(item.id, self.shard[1]) == self.shard[0]


    def covers_backup(self, source: dict) -> bool:
        """Whether a backup (by its record's `source`) is of a server or volume in this proxy's share."""
        obj = source.get("server") or source.get("volume")
        if not obj or not obj.get("id"):
            return False  # a disk image or device: no proxy's share
        if self.availability_zones and obj.get("availability_zone") not in self.availability_zones:
            return False
        return self.shard is None or shard_of(obj["id"], self.shard[1]) == self.shard[0]


def shard_of(item_id: str, count: int) -> int:
    """The shard (1..count) an id belongs to: a hash of the id alone, the same on every proxy and run."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % count + 1


@dataclass
class Picked:
    """What a selection picked for this proxy, and how many more it matched that are other proxies'."""

    items: list
    elsewhere: int = 0


def selects(sel: Selection, server) -> bool:
    """Whether `sel` chooses `server` (openstacksdk's) among its project's servers, as `pick_servers` does."""
    if not (sel.servers or sel.all_servers or sel.tags or sel.metadata):
        return False
    if sel.servers and not _matches(server, sel.servers):
        return False
    return bool(_filtered([server], sel)) and sel.covers(server)


def selects_volume(sel: Selection, volume) -> bool:
    """Whether `sel` chooses `volume` (openstacksdk's) among its project's volumes, as `pick_volumes` does."""
    return bool(sel.volumes) and _matches(volume, sel.volumes) and bool(_filtered([volume], sel)) and sel.covers(volume)


def _matches(obj, patterns: list[str]) -> bool:  # an openstacksdk resource
    return any(p == obj.id or fnmatch.fnmatchcase(obj.name or "", p) for p in patterns)


def _pick(items: list, patterns: list[str], kind: str) -> list:
    """The items each pattern names (id, name or glob), in order; a pattern naming nothing is an error."""
    chosen: list = []
    for pattern in patterns:
        hits = [i for i in items if _matches(i, [pattern])]
        if not hits:
            raise NotFoundError(f"no {kind} matches {pattern!r}", f"check the name or id with `openstack {kind} list`")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _filtered(items: list, sel: Selection) -> list:
    out = []
    for item in items:
        if sel.exclude and _matches(item, sel.exclude):
            continue
        tags = set(getattr(item, "tags", None) or [])
        if sel.tags and not set(sel.tags) <= tags:
            continue
        meta = getattr(item, "metadata", None) or {}
        if any(meta.get(k) != v for k, v in sel.metadata.items()):
            continue
        out.append(item)
    return out


def _split(items: list, sel: Selection) -> Picked:
    """This proxy's items in a stable order (by name), counting those that are another proxy's."""
    mine = [i for i in items if sel.covers(i)]
    return Picked(sorted(mine, key=lambda i: (i.name or "", i.id)), len(items) - len(mine))


def pick_servers(conn, sel: Selection) -> Picked:
    """Servers selected for this proxy. A name or id that matches nothing is an error, even when the
    server it names is another proxy's: the selection, not the split, is what the user wrote."""
    query: dict[str, object] = {"details": True}
    if sel.project:
        query.update(all_projects=True, project_id=sel.project)
    if not (sel.servers or sel.all_servers or sel.tags or sel.metadata):
        return Picked([])
    everything = cloud_call("list servers", lambda: list(conn.compute.servers(**query)))
    chosen = _pick(everything, sel.servers, "server") if sel.servers else everything
    return _split(_filtered(chosen, sel), sel)


def pick_volumes(conn, sel: Selection) -> Picked:
    if not sel.volumes:
        return Picked([])
    query: dict[str, object] = {"details": True}
    if sel.project:
        query.update(all_projects=True, project_id=sel.project)
    everything = cloud_call("list volumes", lambda: list(conn.block_storage.volumes(**query)))
    return _split(_filtered(_pick(everything, sel.volumes, "volume"), sel), sel)


def select_servers(conn, sel: Selection) -> list:
    """The servers of `pick_servers`, for callers that need no count of other proxies' servers."""
    return pick_servers(conn, sel).items


def volume_matches(conn, patterns: list[str]) -> dict[str, set[str]]:
    """Per pattern (ids, names, globs), the ids of the volumes it names; a pattern that names no volume
    is taken as an id: the snapshots of a volume being deleted may outlive its listing."""
    everything = cloud_call("list volumes", lambda: list(conn.block_storage.volumes(details=True)))
    return {p: {v.id for v in everything if _matches(v, [p])} or {p} for p in patterns}
