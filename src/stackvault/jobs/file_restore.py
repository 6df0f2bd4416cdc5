"""File restore: list, search and extract files from the file systems inside a backed-up disk.

The disk is read in place: an NBD export of it (jobs.disk_access) on a private Unix socket, attached
read-only to a libguestfs appliance (engine.guestfiles), which alone parses the tenant's file
systems. Extracted files reach this host as a file's bytes or a tar stream; writing them here is
guarded as a restore is: a new name (never over an existing path), staged under `NAME.partial` and
renamed when complete; tar members that would land outside the target, device nodes and set-id bits
are refused or dropped, since a hostile appliance could send anything.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from ..engine import pids
from ..engine.guestfiles import TIMEOUT_S, DiskFiles, Entry
from ..errors import StackvaultError, UsageError
from .context import JobContext
from .disk_access import OpenDisk, open_disk, serving


@contextmanager
def browsing(ctx: JobContext, ref: str, disk: str | None,
             timeout: float = TIMEOUT_S) -> Iterator[tuple[OpenDisk, DiskFiles]]:
    """One disk of one backup, and its file systems mounted read-only in an appliance."""
    with open_disk(ctx, ref, disk, job="files") as opened:
        _remove_leftovers()
        sockdir = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")
        try:
            sock = os.path.join(sockdir, "nbd")
            label = f"disk {opened.disk} of backup {opened.backup_id}"
            overlay = os.path.join(sockdir, "overlay.qcow2")
            with serving(opened, sock), DiskFiles(sock, overlay, label=label, hv_dir=str(ctx.settings.workdir),
                                                  timeout=timeout) as files:
                yield opened, files
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)


#: The private directory of a files command's export socket and overlay; names the command's pid.
_DIR_PREFIX = "sv-files-"


def _remove_leftovers() -> None:
    """The directories of files commands that were killed (their pid is gone): a killed command's
    appliance dies with it (libguestfs watches its parent), its directory is removed here."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        owner = name[len(_DIR_PREFIX):].split("-", 1)[0]
        if not (name.startswith(_DIR_PREFIX) and owner.isdigit()) or pids.alive(int(owner)):
            continue
        path = os.path.join(tmp, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue  # another user's
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _report(opened: OpenDisk, **fields: object) -> dict:
    return {"backup_id": opened.backup_id, "disk": opened.disk, **fields}


def ls(ctx: JobContext, ref: str, disk: str | None, path: str, timeout: float = TIMEOUT_S) -> dict:
    with browsing(ctx, ref, disk, timeout) as (opened, files):
        return _report(opened, path=path, entries=[e.to_dict() for e in files.ls(path)])


def find(ctx: JobContext, ref: str, disk: str | None, path: str, pattern: str | None,
         timeout: float = TIMEOUT_S) -> dict:
    with browsing(ctx, ref, disk, timeout) as (opened, files):
        return _report(opened, path=path, pattern=pattern, paths=list(files.find(path, pattern)))


def cat(ctx: JobContext, ref: str, disk: str | None, path: str, out: BinaryIO, timeout: float = TIMEOUT_S) -> dict:
    """A regular file's bytes to `out` (stdout)."""
    with browsing(ctx, ref, disk, timeout) as (opened, files):
        entry = files.entry(path)
        if not stat.S_ISREG(entry.mode):
            raise UsageError(f"{entry.path} is not a regular file", "use `files BACKUP ls` for directories")
        out.flush()
        files.download(entry.path, f"/dev/fd/{out.fileno()}")
        return _report(opened, path=entry.path, size=entry.size)


def get(ctx: JobContext, ref: str, disk: str | None, paths: list[str], to_dir: str,
        timeout: float = TIMEOUT_S) -> dict:
    """Each path (file or directory tree) to `to_dir/<its name>`, with owners, modes and times."""
    target_dir = os.path.abspath(to_dir)
    if not os.path.isdir(target_dir):
        raise UsageError(f"{target_dir} is not a directory", "create it first, or name another with --to")
    if not paths:
        raise UsageError("no path to extract", "name one, e.g. /etc/hostname")
    with browsing(ctx, ref, disk, timeout) as (opened, files):
        done = []
        for path in paths:
            entry = files.entry(path)
            name = posixpath.basename(entry.path) or opened.disk
            dest = os.path.join(target_dir, name)
            if os.path.lexists(dest):
                raise UsageError(f"{dest} exists", "choose another --to directory or move it away")
            _extract(files, entry, dest)
            done.append({"path": entry.path, "to": dest, "kind": "directory" if stat.S_ISDIR(entry.mode) else "file"})
        return _report(opened, extracted=done)


def _extract(files: DiskFiles, entry: Entry, dest: str) -> None:
    partial = dest + ".partial"
    if os.path.lexists(partial):
        raise UsageError(f"{partial} exists (an interrupted extraction?)", "remove it and retry")
    try:
        if stat.S_ISDIR(entry.mode):
            os.mkdir(partial, 0o700)
            _untar(files, entry.path, partial)
        elif stat.S_ISREG(entry.mode):
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                files.download(entry.path, f"/dev/fd/{fd}")
            finally:
                os.close(fd)
            _set_attributes(partial, entry)
        else:
            raise UsageError(f"{entry.path} is neither a file nor a directory", "name a file or a directory")
        os.rename(partial, dest)
    except BaseException:
        if os.path.isdir(partial) and not os.path.islink(partial):
            shutil.rmtree(partial, ignore_errors=True)
        elif os.path.lexists(partial):
            os.unlink(partial)
        raise


def _set_attributes(path: str, entry: Entry) -> None:
    if os.geteuid() == 0:  # only root can give files away; anyone else keeps them as their own
        os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(entry.mode) & ~(stat.S_ISUID | stat.S_ISGID))
    os.utime(path, (entry.mtime, entry.mtime), follow_symlinks=False)


def _untar(files: DiskFiles, path: str, dest: str) -> None:
    """The appliance's tar of `path`, streamed through a pipe and unpacked into `dest`."""
    r, w = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            files.tar_out(path, f"/dev/fd/{w}")
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            failure.append(exc)
        finally:
            os.close(w)

    producer = threading.Thread(target=produce, name="sv-tar-out", daemon=True)
    producer.start()
    try:
        with os.fdopen(r, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            tar.extractall(dest, numeric_owner=True, filter=_safe_member)  # noqa: S202 - every member checked by _safe_member
    except tarfile.TarError as exc:
        producer.join()
        if failure:
            raise failure[0] from None
        raise StackvaultError(f"extracting {path} failed: {exc}",
                              "the disk may hold a damaged or hostile file system") from None
    producer.join()
    if failure:
        raise failure[0]


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """A tar member as it may be written here: inside `dest` (links included), no device node or
    FIFO, no set-uid/set-gid bit; owners, other mode bits and times as the guest had them."""
    if member.isdev():
        return None
    checked = tarfile.tar_filter(member, dest)  # refuses absolute paths and paths leading outside
    if member.islnk():
        target = os.path.realpath(os.path.join(dest, member.linkname))
        if os.path.commonpath([target, os.path.realpath(dest)]) != os.path.realpath(dest):
            raise tarfile.LinkOutsideDestinationError(member, target)
    mode = member.mode & ~(stat.S_ISUID | stat.S_ISGID) if member.mode is not None else None
    return checked.replace(mode=mode, deep=False)









