"""Nova's state as one JSON document, so servers, actions and ports survive a restart of Nova.

A dev cloud holds a handful of servers; a lock plus an atomic rewrite on every change is simpler
and safer here than a database schema, and the file stays readable when debugging a test.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: `deleted_servers`: id -> {id, project_id} of every deleted server, whose instance actions
#: Nova still shows from 2.21 on (it soft-deletes instances). `quotas`: project id -> the limits an
#: admin set (os-quota-sets); `server_groups`: id -> os-server-groups record with its members.
COLLECTIONS = ("servers", "actions", "keypairs", "flavors", "networks", "subnets", "ports",
               "security_groups", "meta", "deleted_servers", "quotas", "server_groups")


class Store:
    """Dict-of-collections state; mutate only inside `with store.write() as db:`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db: dict[str, Any] = {name: {} for name in COLLECTIONS}
        if self.path.exists():
            loaded = json.loads(self.path.read_text())
            for name in COLLECTIONS:
                self._db[name] = loaded.get(name, {})

    @contextmanager
    def write(self) -> Iterator[dict[str, Any]]:
        """Exclusive access; the whole document is written back atomically when the block ends."""
        with self._lock:
            yield self._db
            self._flush()

    @contextmanager
    def read(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            yield self._db

    def get(self, collection: str, key: str) -> dict[str, Any] | None:
        """A deep copy of one record (safe to use outside the lock)."""
        with self._lock:
            item = self._db[collection].get(key)
            return copy.deepcopy(item) if item is not None else None

    def values(self, collection: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._db[collection].values()))

    def update(self, collection: str, key: str, **changes: Any) -> dict[str, Any] | None:
        """Set fields of one record; returns the new record, or None if it is gone."""
        with self.write() as db:
            item = db[collection].get(key)
            if item is None:
                return None
            item.update(changes)
            return copy.deepcopy(item)

    def _flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._db, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
