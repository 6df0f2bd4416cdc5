"""Choosing what to back up: servers and volumes by id, name glob, project, tags or metadata."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from ..errors import NotFoundError


@dataclass
class Selection:
    servers: list[str] = field(default_factory=list)  # ids, names or name globs
    volumes: list[str] = field(default_factory=list)
    all_servers: bool = False
    tags: list[str] = field(default_factory=list)  # every tag must be present
    metadata: dict[str, str] = field(default_factory=dict)  # every pair must match
    exclude: list[str] = field(default_factory=list)  # ids, names or globs
    project: str | None = None  # a project id: needs an admin user

    def empty(self) -> bool:
        return not (self.servers or self.volumes or self.all_servers or self.tags or self.metadata)


def _matches(obj, patterns: list[str]) -> bool:  # noqa: ANN001 - an openstacksdk resource
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


def select_servers(conn, sel: Selection) -> list:  # noqa: ANN001
    """Servers in scope, in a stable order (by name). A name or id that matches nothing is an error."""
    query = {"details": True}
    if sel.project:
        query.update(all_projects=True, project_id=sel.project)
    if not (sel.servers or sel.all_servers or sel.tags or sel.metadata):
        return []
    everything = list(conn.compute.servers(**query))
    chosen = _pick(everything, sel.servers, "server") if sel.servers else everything
    return sorted(_filtered(chosen, sel), key=lambda s: (s.name or "", s.id))


def select_volumes(conn, sel: Selection) -> list:  # noqa: ANN001
    if not sel.volumes:
        return []
    query = {"details": True}
    if sel.project:
        query.update(all_projects=True, project_id=sel.project)
    everything = list(conn.block_storage.volumes(**query))
    return sorted(_filtered(_pick(everything, sel.volumes, "volume"), sel), key=lambda v: (v.name or "", v.id))
