"""A repository in a local directory (the default): one file per object.

Nothing in the repository is trusted to be what its name says: a planted symbolic link (`indexes/<id>`
pointing at `/etc`) or a record naming a crafted key must not make a prune delete, or a restore read,
anything outside the repository. So every key is checked (`keys.check_key`), every directory on its
path is opened one component at a time with O_NOFOLLOW|O_DIRECTORY from the repository's root, and
the object itself is opened with O_NOFOLLOW and must be a regular file: anything else at a key (a
link, a directory, a device) is not an object. Directories are made 0700 and files 0600: backup data
and metadata are private to the proxy user.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from ..engine.atomic import TEMP_PREFIX, write_atomic
from ..engine.fileio import libc, make_private
from ..errors import RepositoryError
from .base import Backend, ObjectInfo, read_capped
from .keys import InvalidKeyError, check_key

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_MODE = 0o700


class _NotAnObject(Exception):
    """Something other than a regular file (or nothing) lies at a key or on its path."""


class _NotADirectory(_NotAnObject):
    """A link or a file lies where a directory of the repository belongs. No object is there, but a
    listing of one of the repository's own folders (`backups/`, `chunks/`, `locks/`...) must not say
    "nothing here": gc would take a `backups/` moved elsewhere and linked back for no backups at all."""


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
        self._root_private = False

    @property
    def identity(self) -> str:
        return os.path.realpath(self.root)  # one directory reached by two paths is one repository

    # -- walking without following links ---------------------------------------------------------
    def _fail(self, exc: OSError, key: str, writing: bool) -> RepositoryError:
        """The one-line error for a failed file call on `key`."""
        code = exc.errno
        if code in (errno.ENOSPC, errno.EDQUOT):
            return RepositoryError(f"repository {self.root} is full: no space left writing {key}",
                                   "free space or move the repository; nothing already backed up was changed")
        if code == errno.EROFS:
            return RepositoryError(f"repository {self.root} is read-only: cannot write {key}",
                                   "remount it read-write; restore and verify work on a read-only repository")
        if code in (errno.EACCES, errno.EPERM):
            return RepositoryError(
                f"repository {self.root} is not {'writable' if writing else 'readable'} by this user "
                f"(permission denied on {key})", "run stackvault as the repository's owner or fix its permissions")
        if code == errno.ENOTDIR:
            return RepositoryError(f"repository {self.root} is not a directory (or lies under a file)",
                                   "pass the path of a repository directory with --repo")
        if code == errno.ELOOP:
            return RepositoryError(f"repository object {key} is reached through a symbolic link: refused",
                                   "a repository holds no links: remove it, then run `stackvault verify`")
        if code == errno.EISDIR:
            return RepositoryError(f"repository object {key} is a directory",
                                   "a repository holds only files there: move the directory away and retry")
        return RepositoryError(f"cannot {'write' if writing else 'read'} {key} in repository {self.root}: "
                               f"{exc.strerror}", "check the repository's disk and permissions")

    def _open_root(self, create: bool) -> int:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise _NotAnObject from None
            os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if not self._root_private:  # once: a repository made open by an older version is closed here
            make_private(self.root)
            self._root_private = True
        return fd

    def _open_dir(self, parts: list[str], create: bool) -> int:
        """The directory `root/parts...` opened one component at a time, never through a link (made,
        0700, with `create`). Raises _NotAnObject when, reading, one is missing, a link or a file."""
        fd = self._open_root(create)
        try:
            for part in parts:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _NotAnObject from None
                    try:
                        os.mkdir(part, DIR_MODE, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    if not create:
                        raise _NotADirectory('/'.join(parts[:parts.index(part) + 1])) from None
                    if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                    raise RepositoryError(f"repository {self.root} holds a file where directory "
                                          f"{'/'.join(parts[:parts.index(part) + 1])} belongs",
                                          "move that file away and retry") from None
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextmanager
    def _parent(self, key: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """The open directory holding `key`'s object, and the object's name in it."""
        *dirs, name = check_key(key).split("/")
        fd = self._open_dir(dirs, create)
        try:
            yield fd, name
        finally:
            os.close(fd)

    # -- objects ---------------------------------------------------------------------------------
    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        try:
            with self._parent(key, create=True) as (dir_fd, name):
                write_atomic(name, data, durable=self._per_file, dir_fd=dir_fd)
        except OSError as exc:
            raise self._fail(exc, key, writing=True) from None

    def _open_object(self, key: str) -> int:
        """A read descriptor of the regular file at `key`; _NotAnObject when there is none."""
        with self._parent(key) as (dir_fd, name):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
            except (FileNotFoundError, NotADirectoryError):
                raise _NotAnObject from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _NotAnObject from None
                raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _NotAnObject
        return fd

    def get(self, key: str, max_size: int | None = None) -> bytes:
        try:
            fd = self._open_object(key)
            with os.fdopen(fd, "rb") as f:
                return read_capped(f.read, key, max_size, os.fstat(fd).st_size)
        except _NotAnObject:
            raise KeyError(key) from None
        except OSError as exc:
            raise self._fail(exc, key, writing=False) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            fd = self._open_object(key)
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except _NotAnObject:
            raise KeyError(key) from None
        except OSError as exc:
            raise self._fail(exc, key, writing=False) from None

    def exists(self, key: str) -> bool:
        try:
            os.close(self._open_object(key))
            return True
        except _NotAnObject:
            return False
        except OSError as exc:
            raise self._fail(exc, key, writing=False) from None

    def delete(self, key: str) -> None:
        """Unlink the file at `key` (a link there goes, never what it points at); no object, no-op."""
        try:
            with self._parent(key) as (dir_fd, name):
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except (FileNotFoundError, IsADirectoryError):
                    pass  # a directory at a key is no object: it stays
        except _NotAnObject:
            pass
        except OSError as exc:
            raise self._fail(exc, key, writing=True) from None

    def _walk(self, prefix_dir: str) -> Iterator[tuple[str, list[str], int]]:
        """(relative directory with a trailing `/`, file names, its fd) under `prefix_dir`, never
        following a link; nothing when the directory is missing."""
        try:
            top = self._open_dir(check_key(prefix_dir).split("/") if prefix_dir else [], create=False)
        except _NotADirectory as exc:
            if "/" in str(exc):
                return  # a link planted deeper (`indexes/<id>`) is no folder of the repository: nothing there
            raise RepositoryError(f"repository {self.root} holds a link or a file where directory {exc} belongs: "
                                  "its objects cannot be listed", "a repository holds no links: put the directory "
                                  "itself there (move it back into the repository), then run `stackvault verify`"
                                  ) from None
        except _NotAnObject:
            return
        except OSError as exc:
            raise self._fail(exc, prefix_dir or ".", writing=False) from None
        try:
            base = prefix_dir + "/" if prefix_dir else ""
            for dirpath, _dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
                rel = "" if dirpath == "." else dirpath[2:] + "/"
                yield base + rel, filenames, dir_fd
        finally:
            os.close(top)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names, then filter by the rest of it.
        base_dir = os.path.dirname(prefix)
        for rel_dir, filenames, dir_fd in self._walk(base_dir):
            for name in filenames:
                key = rel_dir + name
                if name.startswith(TEMP_PREFIX) or not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def temp_files(self) -> Iterator[str]:
        """Leftovers of writes a killed process never renamed (`write_atomic`'s temporary files), as
        keys `delete` removes through the same link-refusing walk as any object. A file of that prefix
        whose name is no valid key was not written by stackvault, and stays."""
        for rel_dir, filenames, _dir_fd in self._walk(""):
            for name in filenames:
                if name.startswith(TEMP_PREFIX) and _valid_key(rel_dir + name):
                    yield rel_dir + name

    def create(self) -> None:
        try:
            if os.path.lexists(self.root) and not os.path.isdir(self.root):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.root)
            os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)
        except OSError as exc:
            raise self._fail(exc, "the repository directory", writing=True) from None

    def remove_empty_dirs(self, prefix: str) -> None:
        """Remove the folders under `prefix` that deleting objects left empty (`gc`), deepest first."""
        try:
            top = self._open_dir(check_key(prefix.rstrip("/")).split("/"), create=False)
        except _NotAnObject:
            return
        try:
            # Deepest first, each folder removed from its parent's descriptor: never through a link.
            for _dirpath, dirnames, _filenames, dir_fd in os.fwalk(".", dir_fd=top, topdown=False,
                                                                   follow_symlinks=False):
                for name in dirnames:
                    try:
                        os.rmdir(name, dir_fd=dir_fd)
                    except OSError:
                        pass  # not empty, or a link (which is no folder of ours)
        finally:
            os.close(top)

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


def _valid_key(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKeyError:
        return False
    return True
