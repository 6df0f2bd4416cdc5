"""What a backup is of, named the same way by the job that records it and the metrics that read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Target:
    """A server, a volume, or disks given by path (kind `disk`, id: their keys): one metric series each."""

    kind: str
    id: str
    name: str

    def to_dict(self) -> dict:
        return asdict(self)


def target(source_meta: dict | None, name: str, disk_keys: list[str]) -> Target:
    """From a backup's source description (its record's `source`), its name and its disks' keys."""
    source = source_meta or {}
    kind = source.get("kind")
    if kind in ("server", "volume") and isinstance(source.get(kind), dict):
        thing = source[kind]
        return Target(kind, str(thing.get("id") or ""), str(thing.get("name") or name or ""))
    keys = ",".join(sorted(disk_keys))
    return Target("disk", keys, name or keys)
