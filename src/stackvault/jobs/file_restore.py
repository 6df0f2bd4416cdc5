"""File restore: list, search and extract files from the file systems inside a backed-up disk.

The disk is read in place: an NBD export of it (jobs.disk_access) on a private Unix socket, attached
read-only to a libguestfs appliance (engine.guestfiles), which alone parses the tenant's file
systems. What the appliance writes (a journal replay) goes to a qcow2 overlay in the proxy's
working directory, bounded by its free space, never to /tmp.

Extracted files reach this host as a file's bytes or a tar stream; writing them here is guarded as
a restore is: a new name (never over an existing path), staged under `NAME.partial` and
renamed when complete; tar members that would land outside the target, device nodes and set-id bits
are refused or dropped, since a hostile appliance could send anything. Zeros are written as holes
and the bytes written are bounded by the target's free space (engine.sparse_copy): a tenant's
sparse file of terabytes cannot fill the proxy's disk.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import signal
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import BinaryIO, TypeVar

from ..engine import pids
from ..engine.guestfiles import TIMEOUT_S, DiskFiles, Entry
from ..engine.sparse_copy import ByteBudget, copy_sparse
from ..engine.state import state_name
from ..errors import ExtractionError, StackvaultError, UsageError, warn
from ..progress import human_bytes
from .context import JobContext
from .disk_access import OpenDisk, open_disk, serving


@contextmanager
def browsing(ctx: JobContext, ref: str, disk: str | None,
             timeout: float = TIMEOUT_S) -> Iterator[tuple[OpenDisk, DiskFiles]]:
    """One disk of one backup, and its file systems mounted read-only in an appliance.

    SIGTERM ends the command as Ctrl-C does (KeyboardInterrupt, exit 130): everything below is
    undone on the way out (the partial extraction removed, the appliance and the export stopped,
    the socket directory removed), where the default action would kill the process mid-write."""
    with _terminated_as_interrupt(), open_disk(ctx, ref, disk, job="files") as opened:
        scratch_root = os.path.join(str(ctx.settings.workdir), "tmp")
        os.makedirs(scratch_root, 0o700, exist_ok=True)
        for parent in (tempfile.gettempdir(), scratch_root):
            _remove_leftovers(parent)
        prefix = f"{_DIR_PREFIX}{os.getpid()}-"
        sockdir = tempfile.mkdtemp(prefix=prefix)  # short: a socket's path has at most 107 bytes
        scratch = ""
        try:
            scratch = tempfile.mkdtemp(prefix=prefix, dir=scratch_root)
            sock = os.path.join(sockdir, "nbd")
            label = f"disk {opened.disk} of backup {opened.backup_id}"
            overlay = os.path.join(scratch, "overlay.qcow2")
            with serving(opened, sock), DiskFiles(sock, overlay, label=label, hv_dir=str(ctx.settings.workdir),
                                                  overlay_limit=_overlay_limit(scratch),
                                                  layout_file=_layout_file(ctx, opened), timeout=timeout) as files:
                yield opened, files
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)


#: How many disks' layouts (engine.guestfiles.Layout) the working directory keeps: the most recently used.
LAYOUTS_KEPT = 256


def _layout_file(ctx: JobContext, opened: OpenDisk) -> str:
    """Where the layout of `opened` is kept (beside the repository's working state); the least
    recently used beyond LAYOUTS_KEPT are removed, so layouts of pruned backups do not pile up."""
    directory = os.path.join(str(ctx.settings.workdir), ctx.repo.id, "file-layouts")
    try:
        kept = sorted(os.scandir(directory), key=lambda e: e.stat().st_mtime, reverse=True)
    except OSError:
        kept = []  # none yet
    for old in kept[LAYOUTS_KEPT - 1:]:
        try:
            os.unlink(old.path)
        except OSError:
            pass  # removed by a command beside this one
    return os.path.join(directory, state_name(f"{opened.backup_id}/{opened.disk}") + ".json")


#: The most the appliance's overlay may grow (a journal replay's writes): a tenant's file system
#: cannot make the working directory's file system fill up.
OVERLAY_MAX = 1 << 30


def _overlay_limit(scratch: str) -> int:
    """What the overlay may take: OVERLAY_MAX, or the working directory's free space less the margin."""
    st = os.statvfs(scratch)
    return max(0, min(OVERLAY_MAX, st.f_bavail * st.f_frsize - FREE_MARGIN))


@contextmanager
def _terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread, once: a second signal while the command
    cleans up does not cut the clean-up short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


#: The private directories of a files command's export socket (in /tmp) and overlay (in the working
#: directory's tmp/); they name the command's pid.
_DIR_PREFIX = "sv-files-"


def _remove_leftovers(tmp: str) -> None:
    """The directories in `tmp` of files commands that were killed (their pid is gone): a killed
    command's appliance dies with it (libguestfs watches its parent), its directories are removed here."""
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
    """A regular file's bytes to stdout (`out` is flushed first).

    libguestfs opens a path it downloads to with O_TRUNC, so /dev/fd/1 would truncate the file a
    `cat >> log` appends to; "/dev/stdout" it recognises and writes to its own stdout as it is."""
    with browsing(ctx, ref, disk, timeout) as (opened, files):
        entry = regular_file(files, path)
        out.flush()
        files.download(entry.path, "/dev/stdout")
        return _report(opened, path=entry.path, size=entry.size)


def regular_file(files: DiskFiles, path: str) -> Entry:
    """The entry of `path`, which must be a regular file (what `cat` and a download send)."""
    entry = files.entry(path)
    if not stat.S_ISREG(entry.mode):
        raise UsageError(f"{entry.path} is not a regular file", "use `files BACKUP ls` for directories")
    return entry


def get(ctx: JobContext, ref: str, disk: str | None, paths: list[str], to_dir: str,
        timeout: float = TIMEOUT_S, max_bytes: int | None = None) -> dict:
    """Each path (file or directory tree) to `to_dir/<its name>`, with owners, modes and times.

    Refused before the first byte when what the paths occupy in the guest's file system exceeds the
    target's free space less `FREE_MARGIN`, or `max_bytes`; the bytes written are held to that
    bound as they come."""
    target_dir = os.path.abspath(to_dir)
    if not os.path.isdir(target_dir):
        raise UsageError(f"{target_dir} is not a directory", "create it first, or name another with --to")
    if not paths:
        raise UsageError("no path to extract", "name one, e.g. /etc/hostname")
    with browsing(ctx, ref, disk, timeout) as (opened, files):
        todo = []
        for path in paths:
            entry = files.entry(path)
            dest = os.path.join(target_dir, posixpath.basename(entry.path) or opened.disk)
            if os.path.lexists(dest):
                raise UsageError(f"{dest} exists", "choose another --to directory or move it away")
            todo.append((entry, dest))
        budget = _budget(target_dir, sum(files.occupied(entry) for entry, _ in todo), max_bytes)
        done = []
        for entry, dest in todo:
            _extract(files, entry, dest, budget)
            done.append({"path": entry.path, "to": dest, "kind": "directory" if stat.S_ISDIR(entry.mode) else "file"})
        return _report(opened, extracted=done, bytes_written=budget.spent)


#: Free space an extraction leaves on the target's file system, for everything else this host writes.
FREE_MARGIN = 64 << 20


def _budget(target_dir: str, needed: int, max_bytes: int | None) -> ByteBudget:
    """What the extraction may write into `target_dir`; refused at once when `needed` does not fit."""
    st = os.statvfs(target_dir)
    limits = [(max(0, st.f_bavail * st.f_frsize - FREE_MARGIN),
               f"the free space of {target_dir} less a {human_bytes(FREE_MARGIN)} margin",
               "free space there, or choose another --to directory")]
    if max_bytes is not None:
        limits.append((max_bytes, "--max-bytes", "raise --max-bytes, or extract a smaller path"))
    limit, why, fix = min(limits)
    if needed > limit:
        raise UsageError(f"the extraction needs {human_bytes(needed)} ({needed} bytes), more than {why} "
                         f"({human_bytes(limit)}); nothing was written", fix)
    return ByteBudget(limit, why, fix)


def _extract(files: DiskFiles, entry: Entry, dest: str, budget: ByteBudget) -> None:
    partial = dest + ".partial"
    if os.path.lexists(partial):
        raise UsageError(f"{partial} exists (an interrupted extraction?)", "remove it and retry")
    try:
        if stat.S_ISDIR(entry.mode):
            os.mkdir(partial, 0o700)
            _untar(files, entry.path, partial, budget)
        elif stat.S_ISREG(entry.mode):
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _streamed(files, lambda to: files.download(entry.path, to),
                          lambda stream: copy_sparse(stream, fd, budget, entry.path))
            finally:
                os.close(fd)
            _set_attributes(partial, entry)
        else:
            raise UsageError(f"{entry.path} is neither a file nor a directory", "name a file or a directory")
        os.rename(partial, dest)
    except OSError as exc:
        _remove(partial)
        raise ExtractionError(f"writing {dest} failed: {exc.strerror or exc}", _WRITE_FIXES.get(
            exc.errno or 0, "check the --to directory")) from None
    except BaseException:
        _remove(partial)
        raise


#: How to get past a failed write of an extracted file, by errno.
_WRITE_FIXES = {
    errno.ENOSPC: "free space in the --to directory's file system, or choose another --to",
    errno.EDQUOT: "free space in the --to directory's file system, or choose another --to",
    errno.EACCES: "choose a --to directory this user may write",
    errno.EPERM: "run as root to restore owners, or extract into a file system that allows them",
    errno.ENAMETOOLONG: "a name is too long for this host: extract a deeper directory, or restore the whole disk",
}


def _remove(partial: str) -> None:
    """The staged copy of an extraction that failed."""
    if os.path.isdir(partial) and not os.path.islink(partial):
        shutil.rmtree(partial, ignore_errors=True)
    elif os.path.lexists(partial):
        os.unlink(partial)


def _set_attributes(path: str, entry: Entry) -> None:
    if os.geteuid() == 0:  # only root can give files away; anyone else keeps them as their own
        os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(entry.mode) & ~(stat.S_ISUID | stat.S_ISGID))
    os.utime(path, (entry.mtime, entry.mtime), follow_symlinks=False)


_T = TypeVar("_T")


def _streamed(files: DiskFiles, produce: Callable[[str], None], consume: Callable[[BinaryIO], _T]) -> _T:
    """What `produce` (a libguestfs call writing to the path it is given) sends through a pipe, read
    by `consume` in this thread: libguestfs writes into a pipe on a thread of its own, and this
    thread decides what reaches the disk and stays where a signal can interrupt it (a thread inside
    libguestfs runs no signal handler until the call returns). When `consume` fails or is
    interrupted, the appliance is stopped, so the producer's call ends at once."""
    r, w = os.pipe()
    failure: list[BaseException] = []

    def producing() -> None:
        try:
            produce(f"/dev/fd/{w}")
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            failure.append(exc)
        finally:
            os.close(w)

    producer = threading.Thread(target=producing, name="sv-guest-out", daemon=True)
    producer.start()
    try:
        with os.fdopen(r, "rb") as stream:
            result = consume(stream)
    except tarfile.TarError:
        producer.join()
        if failure:  # the appliance failed: the stream ended early, which is what the tar reader saw
            raise failure[0] from None
        raise
    except BaseException:
        files.stop()
        raise
    finally:
        producer.join()
    if failure:
        raise failure[0]
    return result


def _untar(files: DiskFiles, path: str, dest: str, budget: ByteBudget) -> None:
    """The appliance's tar of `path`, streamed through a pipe and unpacked into `dest`."""
    try:
        skipped = _streamed(files, lambda to: files.tar_out(path, to), lambda stream: unpack(stream, dest, budget))
    except tarfile.TarError as exc:
        raise StackvaultError(f"extracting {path} failed: {exc}",
                              "the disk may hold a damaged or hostile file system") from None
    if skipped:
        warn(f"{len(skipped)} symbolic link(s) under {path} point outside it and were not extracted "
             f"(first: {skipped[0]})")


#: The most members one tar stream may hold: bounds the memory of the names remembered for links.
MAX_MEMBERS = 1_000_000


class HostileTarError(tarfile.TarError):
    """A tar member that could write outside the target or through a link: the stream is refused."""


def unpack(stream: BinaryIO, dest: str, budget: ByteBudget) -> list[str]:
    """The appliance's tar stream unpacked into the directory `dest`; the symbolic links left out.

    The stream is hostile. tarfile's own filters resolve names with a non-strict realpath (which
    stops resolving past a PATH_MAX-long chain of links) and, for a hard link whose target it did
    not write, extract that target again (a skipped device node included). So each member is
    checked here against what this stream wrote: a hard link only to a regular file extracted
    before it, written with os.link; no member below a symbolic link, none written through one (a
    link of the member's own name is removed first); a symbolic link only to a relative target
    inside the tree (others are skipped); names resolved with a strict realpath.
    Owners (numeric), modes without set-id bits and times are kept; devices and FIFOs skipped.
    Regular files are written with their zeros as holes, within `budget`.
    """
    root = os.path.realpath(dest, strict=True)
    files: set[str] = set()
    links: set[str] = set()
    skipped: list[str] = []
    directories: list[tarfile.TarInfo] = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for count, member in enumerate(tar, 1):
            tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every member it read; a stream needs none again
            if count > MAX_MEMBERS:
                raise HostileTarError(f"more than {MAX_MEMBERS} members")
            name = _member_name(member)
            if name is None:  # the directory extracted: its attributes go to the target itself
                if member.isdir():
                    directories.append(member.replace(name=".", mode=member.mode & ~(stat.S_ISUID | stat.S_ISGID),
                                                      deep=False))
                continue
            if member.isdev():
                continue
            _check_parent(root, name, links)
            _replace(root, name)
            links.discard(name)
            files.discard(name)
            if member.issym():
                if not _link_inside(name, member.linkname):
                    skipped.append(f"{name} -> {member.linkname}")
                    continue
                links.add(name)
            if member.islnk():
                target = _member_name(member.replace(name=member.linkname, deep=False))
                if target is None or target not in files:
                    raise HostileTarError(f"hard link {name} to {member.linkname}, not a file of this tree")
                os.link(_resolved(root, target), os.path.join(root, name), follow_symlinks=False)
                continue
            checked = member.replace(name=name, mode=member.mode & ~(stat.S_ISUID | stat.S_ISGID), deep=False)
            if checked.isreg():
                _write_member(tar, checked, root, budget)
                files.add(name)
                continue
            # checked above; only what was checked is written. A directory's owner, mode and time
            # are set once its members are in (as extractall does): a 0555 directory still fills
            tar.extract(checked, root, set_attrs=not checked.isdir(), numeric_owner=True, filter="fully_trusted")
            if checked.isdir():
                directories.append(checked)
        for d in sorted(directories, key=lambda d: d.name, reverse=True):
            path = os.path.join(root, d.name)
            if os.path.isdir(path) and not os.path.islink(path):
                tar.chown(d, path, numeric_owner=True)
                tar.utime(d, path)
                tar.chmod(d, path)
    return skipped


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, budget: ByteBudget) -> None:
    """A checked regular file member, its zeros as holes, then its owner, mode and time."""
    path = os.path.join(root, member.name)
    source = tar.extractfile(member)
    assert source is not None  # a regular member always has a reader
    os.makedirs(os.path.dirname(path), exist_ok=True)  # a member before its directory's (as tarfile does)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        copy_sparse(source, fd, budget, member.name)
    finally:
        os.close(fd)
    tar.chown(member, path, numeric_owner=True)
    tar.chmod(member, path)
    tar.utime(member, path)


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The member's path relative to the target; None for the target itself; refused if it leaves it."""
    name = posixpath.normpath(member.name)
    if name.startswith("/") or name == ".." or name.startswith("../"):
        raise HostileTarError(f"member {member.name!r} lies outside the target")
    return None if name == "." else name


def _check_parent(root: str, name: str, links: set[str]) -> None:
    """Refuse a member whose parent path goes through a symbolic link (of this stream or on disk)."""
    parts = name.split("/")[:-1]
    for n in range(1, len(parts) + 1):
        if "/".join(parts[:n]) in links:
            raise HostileTarError(f"member {name} lies below the symbolic link {'/'.join(parts[:n])}")
    existing = os.path.join(root, *parts)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if _resolved(root, os.path.relpath(existing, root)) != existing:
        raise HostileTarError(f"member {name} lies below a symbolic link")


def _replace(root: str, name: str) -> None:
    """A later member replaces an earlier one of its name, as tar does: remove a link or file there
    first, so nothing is written, chmod-ed or chown-ed through a symbolic link."""
    path = os.path.join(root, name)
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)


def _resolved(root: str, name: str) -> str:
    """`root/name` with every link resolved (strictly: a loop or an over-long chain is refused),
    which must stay inside `root`."""
    try:
        real = os.path.realpath(os.path.join(root, name), strict=True)
    except OSError as exc:
        raise HostileTarError(f"{name} cannot be resolved: {exc.strerror}") from None
    if real != root and not real.startswith(root + os.sep):
        raise HostileTarError(f"{name} resolves outside the target")
    return real


def _link_inside(name: str, target: str) -> bool:
    """A symbolic link's target is relative and stays inside the tree."""
    if target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return not (resolved == ".." or resolved.startswith("../"))
