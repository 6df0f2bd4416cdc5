"""Which chunks a repository already holds, learned by listing instead of asking chunk by chunk.

A Full makes sure every chunk it needs is in the repository. Asking (`exists`) costs one call per
block, which a local disk answers in microseconds but an object store in tens of milliseconds: on a
local Swift a Full spent half its requests on HEADs (docs/storage.md). Listing `chunks/xx/` answers
for every chunk under that prefix at once (1,000 to 10,000 names a call), so on an object store a
Full lists each prefix the first time one of its blocks needs it, at most 256 listings a disk.

A listing is only as fresh as the moment it was taken. That is safe here: chunks are deleted only by
`gc` under the exclusive repository lock, which no backup holding the shared lock can overlap, and a
chunk added by another proxy after the listing is merely uploaded again. Memory is bounded: a
prefix with more than `MAX_PER_PREFIX` chunks (a repository of over a million chunks) is not kept,
and its blocks are asked for one by one as before.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .layout import chunk_folder, chunk_id_of

if TYPE_CHECKING:
    from .repository import Repository

MAX_PER_PREFIX = 4096
PREFIXES = 256


class ListedChunks:
    """`has(digest)` from one listing per `chunks/xx/` prefix, taken when first needed."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._known: dict[int, set[bytes] | None] = {}
        self._locks = [threading.Lock() for _ in range(PREFIXES)]

    def has(self, digest: bytes) -> bool:
        prefix = digest[0]
        with self._locks[prefix]:  # one listing a prefix; the others' blocks go on meanwhile
            if prefix not in self._known:
                self._known[prefix] = self._list(prefix)
            known = self._known[prefix]
        return self.repo.has_chunk(digest) if known is None else digest in known

    def note(self, digest: bytes) -> None:
        """`digest` was just stored: a listing taken before it must now answer yes."""
        with self._locks[digest[0]]:
            known = self._known.get(digest[0])
            if known is not None:
                known.add(digest)

    def _list(self, prefix: int) -> set[bytes] | None:
        found: set[bytes] = set()
        for info in self.repo.backend.list(chunk_folder(prefix)):
            digest = chunk_id_of(info.key)
            if digest is None:
                continue  # not a chunk (a stray temporary object): never counts as present
            found.add(digest)
            if len(found) > MAX_PER_PREFIX:
                return None
        return found
