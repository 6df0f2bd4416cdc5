"""A repository in a local directory (the default): one file per object."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator

from ..engine.atomic import TEMP_PREFIX, write_atomic
from ..engine.fileio import libc
from ..errors import RepositoryError
from .base import Backend, ObjectInfo


class LocalBackend(Backend):
    """Objects are files under `root`; keys map to relative paths.

    Sync levels: `file` fsyncs each object as it is written (slow, as restic's local backend);
    `job` writes without fsync and makes the whole file system durable with one syncfs(2) in `sync()`,
    which the engine calls before committing a manifest: the manifest never points at data that a
    power loss could take back, at a fraction of the cost.
    """

    def __init__(self, root: str, *, sync: str = "job") -> None:
        if sync not in ("file", "job"):
            raise ValueError(f"unknown sync level {sync!r}")
        self.root = os.path.abspath(root)
        self.location = self.root
        self._per_file = sync == "file"
        self._made_dirs: set[str] = set()

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return os.path.join(self.root, key)

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        if directory not in self._made_dirs:
            os.makedirs(directory, exist_ok=True)
            self._made_dirs.add(directory)
        try:
            write_atomic(path, data, durable=self._per_file)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RepositoryError(
                    f"repository {self.root} is full: no space left writing {key}",
                    "free space or move the repository; nothing already backed up was changed",
                ) from exc
            raise

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names, then filter by the rest of it.
        base_dir = os.path.dirname(prefix)
        start = self._path(base_dir) if base_dir else self.root
        if not os.path.isdir(start):
            return
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                key = rel_dir + name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def temp_files(self) -> Iterator[str]:
        """Leftovers of writes a killed process never renamed: `gc` removes them."""
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    yield os.path.join(dirpath, name)

    def remove_empty_dirs(self, prefix: str) -> None:
        """Remove the folders under `prefix` that deleting objects left empty (`gc`), deepest first."""
        start = self._path(prefix.rstrip("/"))
        for dirpath, _dirnames, _filenames in os.walk(start, topdown=False):
            if dirpath != start:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass  # not empty

    def sync(self) -> None:
        if self._per_file or not os.path.isdir(self.root):
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), self.root)
        finally:
            os.close(fd)
