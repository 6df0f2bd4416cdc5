"""Commands that read one backup's disk without restoring it: `files`, `mount`, `serve-nbd`
(docs/file-restore.md). `restore --file` is `files get` under the restore command's name."""

from __future__ import annotations

import argparse
import sys

from .. import render
from ..config import parse_size, seconds
from ..errors import UsageError
from .command import Outcome, command
from .invocation import Invocation
from .parser import checked


def _files_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup")
    p.add_argument("action", choices=("ls", "find", "cat", "get"))
    p.add_argument("path", help="an absolute path inside the disk's file systems (`ls /` shows them)")
    p.add_argument("--disk", default=None, help="which disk of a backup with several")
    p.add_argument("--to", default=None, metavar="DIR", help="get: the directory to extract into")
    p.add_argument("--name", default=None, metavar="GLOB", help="find: only names matching this glob")
    p.add_argument("--timeout", type=checked(seconds, "--timeout"), default=None, metavar="DURATION",
                   help="stop the appliance after this long (default 10m)")
    p.add_argument("--max-bytes", type=parse_size, default=None, metavar="SIZE",
                   help="get: refuse an extraction that would write more than this (e.g. 10G; the target's "
                        "free space less 64 MiB bounds it anyway)")


@command("files", "list, search and extract files inside a backed-up disk (read in a libguestfs appliance)",
         arguments=_files_arguments)
def files(inv: Invocation) -> Outcome:
    from ..engine.guestfiles import TIMEOUT_S
    from ..jobs import file_restore

    args, ctx = inv.args, inv.ctx
    timeout = args.timeout or TIMEOUT_S
    if args.action == "ls":
        return Outcome(file_restore.ls(ctx, args.backup, args.disk, args.path, timeout), renderer=render.files_ls)
    if args.action == "find":
        return Outcome(file_restore.find(ctx, args.backup, args.disk, args.path, args.name, timeout),
                       renderer=render.files_found)
    if args.action == "cat":
        args.quiet = True  # stdout holds the file's bytes and nothing else, no report, not even under --json
        args.json = False
        return Outcome(file_restore.cat(ctx, args.backup, args.disk, args.path, sys.stdout.buffer, timeout),
                       renderer=lambda _result: "")
    if not args.to:
        raise UsageError("files get needs a directory to extract into", "add --to DIR")
    return Outcome(file_restore.get(ctx, args.backup, args.disk, [args.path], args.to, timeout, args.max_bytes),
                   renderer=render.files_extracted)


def restore_files(inv: Invocation) -> Outcome:
    """`restore BACKUP --file PATH ... --to file:DIR`."""
    from ..engine.guestfiles import TIMEOUT_S
    from ..jobs import file_restore

    args = inv.args
    kind, _, to_dir = args.to.partition(":")
    if kind != "file" or not to_dir:
        raise UsageError(f"files are restored into a directory, not {args.to!r}", "use --to file:DIR")
    return Outcome(file_restore.get(inv.ctx, args.backup, args.disk, args.file, to_dir, TIMEOUT_S),
                   renderer=render.files_extracted)


def _mount_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mountpoint")
    p.add_argument("backup", nargs="?", default=None, help="only this backup")
    p.add_argument("--server", default=None, metavar="NAME", help="only this server's backups")


@command("mount", "show backups as read-only raw disk images in a FUSE file system (until Ctrl-C)",
         arguments=_mount_arguments, renderer=render.unmounted)
def mount(inv: Invocation) -> Outcome:
    from ..jobs.backup_mount import mount as mount_backups

    args = inv.args
    return Outcome(mount_backups(inv.ctx, args.mountpoint, args.server, args.backup))


def _serve_nbd_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup")
    p.add_argument("--disk", default=None, help="which disk of a backup with several")
    p.add_argument("--socket", required=True, metavar="PATH",
                   help="a Unix socket path, created 0600 (no TCP: NBD has no authentication)")


@command("serve-nbd", "serve a backup's disk read-only over NBD (for qemu-img, QEMU, guestfish)",
         arguments=_serve_nbd_arguments, renderer=render.nbd_served)
def serve_nbd(inv: Invocation) -> Outcome:
    from ..jobs.disk_access import serve_nbd as serve

    args = inv.args
    return Outcome(serve(inv.ctx, args.backup, args.disk, args.socket))
