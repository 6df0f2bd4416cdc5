"""`get(key, max_size)` on every backend: an object over the limit is refused (ObjectTooLargeError)
after reading at most the limit + 1 bytes; one at the limit is returned whole."""

from __future__ import annotations

import pytest

from stackvault.storage import Backend
from stackvault.storage.base import ObjectTooLargeError

from .test_conformance import backend  # noqa: F401 - the fixture: local, memory, S3 and Swift


def test_get_max_size(backend: Backend) -> None:  # noqa: F811 - the imported fixture
    body = bytes(range(256)) * 4096  # 1 MiB: several reads of a streamed body
    backend.put("backups/x.json", body)
    assert backend.get("backups/x.json", len(body)) == body
    assert backend.get("backups/x.json") == body
    with pytest.raises(ObjectTooLargeError, match=f"larger than {len(body) - 1} bytes"):
        backend.get("backups/x.json", len(body) - 1)
    with pytest.raises(KeyError):
        backend.get("backups/none.json", 10)
    backend.put("backups/x.json", b"")
    assert backend.get("backups/x.json", 0) == b""
