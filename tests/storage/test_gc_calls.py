"""The two calls of the storage interface that only `gc` makes, over every backend: `temp_files` and
`remove_empty_dirs`. A backend without temporary files or folders answers with the interface's
defaults (none, nothing to do); through the retry wrapper the same as without it."""

from __future__ import annotations

from pathlib import Path

from stackvault.storage import Backend
from stackvault.storage.local import LocalBackend

from .test_conformance import _driver, backend  # noqa: F401 - the fixture over every backend


def test_finished_writes_leave_no_temporary_files(backend: Backend) -> None:  # noqa: F811 - the fixture
    for key in ("config", "chunks/ab/ab01", "indexes/b1/0.fidx"):
        backend.put(key, b"x" * 100)
    assert list(backend.temp_files()) == []


def test_empty_folders_go_and_objects_stay(backend: Backend) -> None:  # noqa: F811 - the fixture
    backend.put("chunks/ab/ab01", b"chunk")
    backend.put("indexes/b1/0.fidx", b"index")
    backend.put("indexes/b2/0.fidx", b"index")
    backend.delete("indexes/b1/0.fidx")
    backend.remove_empty_dirs("indexes/")
    assert sorted(o.key for o in backend.list("")) == ["chunks/ab/ab01", "indexes/b2/0.fidx"]
    assert backend.get("indexes/b2/0.fidx") == b"index"
    driver = _driver(backend)
    if isinstance(driver, LocalBackend):
        assert sorted(p.name for p in (Path(driver.root) / "indexes").iterdir()) == ["b2"]
