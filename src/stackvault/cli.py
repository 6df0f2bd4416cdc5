"""The `stackvault` command: parses, calls a job, renders. No logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from . import __version__, render
from .config import (
    CONSISTENCY_LEVELS,
    Retention,
    Settings,
    compression_level,
    load_settings,
    parse_pairs,
    parse_size,
    seconds,
    volume_backends,
    whole_number,
)
from .engine.fileio import make_private
from .engine.staging import StagingLedger
from .errors import CatalogError, StackvaultError, UsageError, warn
from .jobs.context import JobContext
from .progress import progress_factory

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DAMAGED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, as every other usage error
        raise UsageError(message, f"see `{self.prog} --help`")


def _checked(check: Callable[..., object], option: str) -> Callable[[str], object]:
    """An argparse type that refuses a bad value with the one-line error naming the option (not a bare
    "invalid value"), e.g. a negative count that would otherwise read as "keep nothing"."""
    return lambda text: check(text, option)


def _global_options(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument("--config", default=default, help="TOML settings file (env STACKVAULT_CONFIG)")
    p.add_argument("--repo", default=default, help="repository location (env STACKVAULT_REPO)")
    p.add_argument("--workdir", default=default, help="working state directory (env STACKVAULT_WORKDIR)")
    p.add_argument("--catalog", default=default, help="catalog SQLAlchemy URL (env STACKVAULT_CATALOG)")
    p.add_argument("--json", action="store_true", default=default if default is not None else False,
                   help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", default=default if default is not None else False)
    p.add_argument("--wait", type=_checked(seconds, "--wait"), default=default, metavar="SECONDS",
                   help="wait this long for a conflicting lock to go away")
    p.add_argument("--os-cloud", default=default, metavar="NAME", help="clouds.yaml entry (default: OS_CLOUD / OS_*)")
    p.add_argument("--passphrase-file", default=default, metavar="PATH",
                   help="an encrypted repository's passphrase (else STACKVAULT_PASSPHRASE, else asked on a terminal)")
    p.add_argument("--ceph-conf", default=default, metavar="PATH", help="rbd sources: ceph.conf ([ceph] conf)")
    p.add_argument("--ceph-client", default=default, metavar="client.NAME",
                   help="rbd sources: the Ceph user, read-only is enough ([ceph] client)")
    p.add_argument("--ceph-keyring", default=default, metavar="PATH",
                   help="rbd sources: that user's keyring ([ceph] keyring)")


def _share_options(p: argparse.ArgumentParser) -> None:
    """This proxy's share when several split the servers (overrides [cloud] and [[jobs]] settings)."""
    p.add_argument("--availability-zone", action="append", default=[], metavar="AZ",
                   help="only servers and volumes in this availability zone (repeat for several)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="only the K-th of N shares of the servers, by a hash of their ids (proxies 1/N .. N/N)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stackvault", description="Block-level backup and restore of disks and OpenStack servers.")
    parser.add_argument("--version", action="version", version=f"stackvault {__version__}")
    _global_options(parser, None)
    common = _Parser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=[common])

    p = cmd("init", "create a repository")
    p.add_argument("--block-size", default=None, help="block size, a power of two from 64KiB to 16MiB (default 512KiB)")
    p.add_argument("--compression-level", type=_checked(compression_level, "--compression-level"), default=None,
                   help="zstd level, 1 (fastest, the default) to 22 (smallest); fixed for the repository")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt everything stored (AES-256-GCM) under a passphrase; mandatory from then on")

    p = cmd("key", "an encrypted repository's passphrases (key slots)")
    p.add_argument("action", choices=("add", "list", "remove"))
    p.add_argument("key_id", nargs="?", default=None, help="remove: the key slot to remove (see `key list`)")
    p.add_argument("--new-passphrase-file", default=None, metavar="PATH",
                   help="add: the new passphrase (else STACKVAULT_NEW_PASSPHRASE, else asked on a terminal)")

    p = cmd("backup", "back up disks, servers or volumes")
    p.add_argument("--source", action="append", default=[], metavar="file:PATH",
                   help="a disk image or device, or rbd:POOL/IMAGE@SNAP (an RBD snapshot)")
    p.add_argument("--server", action="append", default=[], metavar="NAME|ID", help="a server (name globs work)")
    p.add_argument("--volume", action="append", default=[], metavar="NAME|ID", help="a Cinder volume")
    p.add_argument("--all", action="store_true", help="every server of the project")
    p.add_argument("--server-tag", action="append", default=[], metavar="TAG", help="servers with this tag")
    p.add_argument("--server-metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="servers with this metadata, e.g. backup=yes")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME|ID")
    p.add_argument("--project", default=None, metavar="ID", help="servers of another project (admin)")
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="run the config's [[jobs]] of this name (globs work: --job '*' runs them all)")
    p.add_argument("--level", choices=("full", "incremental", "differential"), default="incremental")
    p.add_argument("--name", default="")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--ceph-volume-backend", action="append", default=[], metavar="NAME[=POOL]",
                   help="volumes of this Cinder backend are RBD images in POOL (default volumes): read them "
                        "straight from Ceph ([ceph] volume_backends)")
    p.add_argument("--no-changed-blocks", action="store_true",
                   help="read RBD images in full, without Ceph's list of changed blocks ([ceph] changed_blocks)")
    p.add_argument("--require-consistency", choices=CONSISTENCY_LEVELS, default=None,
                   help="refuse servers whose backup would be less consistent (default: [cloud] require_consistency)")
    _share_options(p)

    p = cmd("list", "list backups")
    p.add_argument("--source", default=None, metavar="file:PATH")
    p.add_argument("--server", default=None, metavar="NAME|ID")
    _share_options(p)

    p = cmd("show", "show one backup")
    p.add_argument("backup")

    p = cmd("restore", "restore a disk of a backup")
    p.add_argument("backup")
    p.add_argument("--to", required=True, metavar="file:PATH|image:NAME|volume:NAME|server:NAME")
    p.add_argument("--format", choices=("raw", "qcow2"), default=None)
    p.add_argument("--disk", default=None, help="which disk of a backup with several")
    p.add_argument("--force", action="store_true", help="overwrite an existing target")
    p.add_argument("--flavor", default=None, help="server restore: flavor (default: the original)")
    p.add_argument("--network", default=None, help="server restore: network (default: the original)")
    p.add_argument("--key-name", default=None, help="server restore: key pair (default: the original)")
    p.add_argument("--file", action="append", default=[], metavar="PATH",
                   help="restore only this file or directory of the disk into --to file:DIR (repeat for several)")

    p = cmd("serve-nbd", "serve a backup's disk read-only over NBD (for qemu-img, QEMU, guestfish)")
    p.add_argument("backup")
    p.add_argument("--disk", default=None, help="which disk of a backup with several")
    p.add_argument("--socket", required=True, metavar="PATH|127.0.0.1:PORT",
                   help="a Unix socket path, or a loopback address (nothing else: NBD has no authentication)")

    p = cmd("files", "list, search and extract files inside a backed-up disk (read in a libguestfs appliance)")
    p.add_argument("backup")
    p.add_argument("action", choices=("ls", "find", "cat", "get"))
    p.add_argument("path", help="an absolute path inside the disk's file systems (`ls /` shows them)")
    p.add_argument("--disk", default=None, help="which disk of a backup with several")
    p.add_argument("--to", default=None, metavar="DIR", help="get: the directory to extract into")
    p.add_argument("--name", default=None, metavar="GLOB", help="find: only names matching this glob")
    p.add_argument("--timeout", type=_checked(seconds, "--timeout"), default=None, metavar="SECONDS",
                   help="stop the appliance after this long (default 600)")

    p = cmd("mount", "show backups as read-only raw disk images in a FUSE file system (until Ctrl-C)")
    p.add_argument("mountpoint")
    p.add_argument("backup", nargs="?", default=None, help="only this backup")
    p.add_argument("--server", default=None, metavar="NAME", help="only this server's backups")

    p = cmd("doctor", "the consistency each server's next backup will have, why, and the fix")
    p.add_argument("--server", action="append", default=[], metavar="NAME|ID", help="a server (name globs work)")
    p.add_argument("--all", action="store_true", help="every server of the project (the default)")
    p.add_argument("--server-tag", action="append", default=[], metavar="TAG", help="servers with this tag")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME|ID")
    p.add_argument("--require-consistency", choices=CONSISTENCY_LEVELS, default=None,
                   help="the policy to check (default: [cloud] require_consistency); exit 1 when not met")
    _share_options(p)
    p.add_argument("--fix-images", action="store_true", help="set the guest agent properties on the images")
    p.add_argument("--yes", action="store_true", help="with --fix-images: do not ask for confirmation")

    cmd("guest-hook", "print the fsfreeze hook to install in guests (/etc/qemu-ga/fsfreeze-hook.d/)")

    p = cmd("cleanup", "remove what killed jobs left in the cloud (found by tag)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--bases", action="store_true",
                   help="also delete the Cinder snapshots kept as bases of the next backups "
                        "(all, or those of --volume)")
    p.add_argument("--volume", action="append", default=[], metavar="NAME|ID", help="with --bases: only this volume's")
    p.add_argument("--repository", default=None, metavar="ID",
                   help="with --bases: only the bases kept for this repository id (e.g. an abandoned one)")

    p = cmd("verify", "check the repository")
    p.add_argument("backup", nargs="?")
    p.add_argument("--deep", action="store_true", help="read and re-hash every chunk")

    p = cmd("forget", "remove named backups: also one whose record is damaged or that is missing from the repository")
    p.add_argument("backup", nargs="+", help="backup id (or a unique prefix)")

    p = cmd("trust", "what this proxy remembers of the repository (to notice a replaced or rolled back one)")
    p.add_argument("action", choices=("accept",),
                   help="accept: remember the repository as it is now (after a deliberate change)")

    p = cmd("prune", "forget backups by retention policy")
    for rule in ("last", "daily", "weekly", "monthly"):
        p.add_argument(f"--keep-{rule}", type=_checked(whole_number, f"--keep-{rule}"), default=None, metavar="N")
    p.add_argument("--dry-run", action="store_true")

    p = cmd("gc", "delete chunks no backup references")
    p.add_argument("--grace", type=_checked(seconds, "--grace"), default=0.0, metavar="SECONDS",
                   help="keep unreferenced chunks younger than this")
    p.add_argument("--dry-run", action="store_true")

    p = cmd("state", "the proxy's working state: rebuild it from the repository, save it there, restore it")
    p.add_argument("action", choices=("rebuild", "backup", "restore"))
    p.add_argument("state_id", nargs="?", default=None, help="restore: which saved state (default: the newest)")
    p.add_argument("--source", default=None, metavar="file:PATH", help="rebuild: only this disk")
    p.add_argument("--config-out", default=None, metavar="PATH", help="restore: write the saved config here")
    p.add_argument("--force", action="store_true", help="restore: overwrite an existing config file")
    p.add_argument("--yes", action="store_true",
                   help="restore: take saved state that cannot be authenticated (a plain repository's) or whose "
                        "config points to another repository, without asking")

    p = cmd("recover", "make this a working proxy from the repository alone (config, catalog, working state)")
    p.add_argument("--config-out", default=None, metavar="PATH",
                   help="where to write the recovered config (default: <workdir>/stackvault.toml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")
    p.add_argument("--yes", action="store_true",
                   help="take saved state that cannot be authenticated (a plain repository's) or whose config "
                        "points to another repository, without asking")

    p = cmd("catalog", "the catalog database")
    p.add_argument("action", choices=("rebuild",))
    return parser


def _disk_key(spec: str | None, settings: Settings) -> str | None:
    if spec is None:
        return None
    if spec.startswith("rbd:"):  # its key names the cluster's fsid and the image: ask the cluster
        from .engine.sources import open_source

        with open_source(spec, settings.ceph) as source:
            return source.key
    import os

    path = spec.split(":", 1)[1] if ":" in spec and len(spec.split(":", 1)[0]) > 1 else spec
    return f"file:{os.path.realpath(path)}"


def run(args: argparse.Namespace) -> tuple[dict, Callable[[dict], str], int]:
    """Run the command; returns (result, human renderer, exit code)."""
    settings = load_settings(args.config, repo=args.repo, workdir=args.workdir, catalog=args.catalog,
                             lock_wait=args.wait)
    if args.os_cloud:
        settings.cloud.os_cloud = args.os_cloud
    for key in ("conf", "client", "keyring"):
        if getattr(args, f"ceph_{key}"):
            setattr(settings.ceph, key, getattr(args, f"ceph_{key}"))
    if getattr(args, "no_changed_blocks", False):
        settings.ceph.changed_blocks = False
    if getattr(args, "ceph_volume_backend", None):
        settings.ceph.volume_backends = volume_backends(args.ceph_volume_backend, "--ceph-volume-backend")
    if hasattr(args, "shard"):  # backup, doctor, list
        settings.override_share(args.availability_zone, args.shard)
    ctx = JobContext(settings, args.passphrase_file)
    make_private(settings.workdir)  # state, catalog, memory of repositories: made open by an older version?
    for path in StagingLedger(settings.workdir).sweep():  # a killed restore's, whatever this command is
        print(f"stackvault: removed {path}, left by a killed restore", file=sys.stderr)
    progress = progress_factory(not args.quiet and not args.json)
    c = args.command
    if c == "init":
        from .engine.repository import Repository, check_block_size

        bs = parse_size(args.block_size) if args.block_size else settings.block_size
        check_block_size(bs, args.block_size)
        level = args.compression_level if args.compression_level is not None else settings.compression_level
        secret = None
        if args.encrypt:
            from functools import partial

            from .engine.keys import ENV, new_passphrase

            secret = partial(new_passphrase, ctx.backend.location, args.passphrase_file, ENV, "--passphrase-file")
        repo = Repository.init(ctx.backend, bs, level, passphrase=secret)
        from .jobs.trust import remember

        remember(settings.workdir, repo, None)  # a repository this proxy made is the one it trusts there
        result = {"repo": repo.location, "id": repo.id, "block_size": repo.config.block_size,
                  "encrypted": repo.encrypted}
        return result, render.init, EXIT_OK
    if c == "key":
        return _key(ctx, args)
    if c in ("list", "catalog"):
        ctx.repo  # noqa: B018 - open (and unlock) the repository before the catalog is touched
    if c == "backup":
        from .jobs.backup import back_up_files, backup_report

        if args.source:
            record = back_up_files(ctx, args.source, args.level, args.name, parse_pairs(args.tag, "tag"), progress)
            return backup_report(record), render.backup, EXIT_OK
        from .cloud.connection import connect
        from .cloud.inventory import Selection
        from .jobs.cloud_backup import back_up_cloud, back_up_jobs

        if args.job:
            import fnmatch

            jobs = [j for j in settings.jobs if any(fnmatch.fnmatchcase(j.name, p) for p in args.job)]
            if not jobs:
                names = ", ".join(j.name for j in settings.jobs) or "none"
                raise UsageError(f"no [[jobs]] in the config match {', '.join(args.job)}", f"the config has: {names}")
            ctx.repo  # noqa: B018 - fail on a bad repository before touching any cloud
            result = back_up_jobs(ctx, jobs, args.level, connect, progress)
            return result, render.cloud_backup, EXIT_OK if result["status"] in ("success", "warning") else EXIT_FAILED

        selection = Selection(servers=args.server, volumes=args.volume, all_servers=args.all, tags=args.server_tag,
                              metadata=parse_pairs(args.server_metadata, "server-metadata"), exclude=args.exclude,
                              project=args.project, **_share(settings))
        if selection.empty():
            raise UsageError("nothing to back up", "pass --source file:PATH, --server, --volume, --all or --server-tag")
        if args.require_consistency:
            settings.cloud.require_consistency = args.require_consistency
        ctx.repo  # noqa: B018 - fail on a bad repository before touching the cloud
        result = back_up_cloud(ctx, connect(settings.cloud.os_cloud), selection, args.level, progress)
        return result, render.cloud_backup, EXIT_OK if result["status"] in ("success", "warning") else EXIT_FAILED
    if c == "list":
        from .jobs.maintenance import sync_catalog
        from .jobs.trust import rollback

        try:
            synced = sync_catalog(ctx)
            rows = ctx.catalog.backups(ctx.repo.id, _disk_key(args.source, settings))
            unlisted = None
        except CatalogError as exc:  # the repository holds the truth: list its records, and say why
            rows, synced, unlisted = *_records(ctx, _disk_key(args.source, settings)), exc
        if args.server:
            rows = [r for r in rows if args.server in ((r.source or {}).get("server", {}).get("id"),
                                                       (r.source or {}).get("server", {}).get("name"))]
        share = _listed_share(args)
        if share is not None:
            rows = [r for r in rows if share.covers_backup(r.source or {})]
        result = render.list_result(rows, synced["missing"], synced["damaged"],
                                    rollback(ctx, ctx.repo, synced["ids"]), unlisted)
        if unlisted is not None:  # the interrupted jobs are in the catalog that cannot be read
            return result, render.listing, EXIT_OK
        return _noting_interrupted(ctx, result), render.listing, EXIT_OK
    if c == "show":
        record = ctx.repo.get_backup(ctx.repo.resolve(args.backup))
        from .jobs.quiesce_proof import with_proof

        shown = with_proof(ctx.repo, render.record_dict(record))
        try:
            shown = _noting_interrupted(ctx, shown)
        except StackvaultError:
            pass  # `show` reads the repository alone: an unreachable catalog only loses the notes
        return shown, render.show, EXIT_OK
    if c == "files" or (c == "restore" and args.file):
        from .jobs.file_restore import run_files

        return run_files(ctx, args)
    if c == "restore":
        kind, _, name = args.to.partition(":")
        if kind in ("image", "volume", "server"):
            return _cloud_restore(ctx, args, kind, name, progress), render.cloud_restore, EXIT_OK
        from .jobs.restore import parse_target, restore

        target = parse_target(args.to, args.format, args.force, settings.workdir)
        return restore(ctx, args.backup, target, args.disk, progress), render.restore, EXIT_OK
    if c == "serve-nbd":
        from .jobs.disk_access import render_served, serve_nbd

        return serve_nbd(ctx, args.backup, args.disk, args.socket), render_served, EXIT_OK
    if c == "mount":
        from .jobs.backup_mount import mount, render_mount

        return mount(ctx, args.mountpoint, args.server, args.backup), render_mount, EXIT_OK
    if c == "doctor":
        return _doctor(args, settings)
    if c == "guest-hook":
        from .cloud import guest_hook

        return ({"path": guest_hook.HOOK_PATH, "marker": guest_hook.MARKER_PATH, "script": guest_hook.hook_script(),
                 "steps": guest_hook.install_steps()}, render.guest_hook, EXIT_OK)
    if c == "cleanup":
        from .cloud.connection import connect
        from .jobs.cleanup import cleanup

        if args.volume and not args.bases:
            raise UsageError("cleanup --volume names whose bases to release", "add --bases, or leave out --volume")
        if args.repository and not args.bases:
            raise UsageError("cleanup --repository names whose bases to release",
                             "add --bases, or leave out --repository")
        conn = connect(settings.cloud.os_cloud)
        result = cleanup(conn, dry_run=args.dry_run, proxy_server=settings.cloud.proxy_server, release=args.bases,
                         volumes=args.volume or None, repository=args.repository)
        return result, render.cleanup, EXIT_FAILED if result["failed"] else EXIT_OK
    if c == "verify":
        from .jobs.verify import verify

        verified = verify(ctx, args.backup, args.deep, progress)
        return verified.to_dict(), render.verify, EXIT_OK if verified.ok else EXIT_DAMAGED
    if c == "forget":
        from .jobs.prune import forget

        return forget(ctx, args.backup), render.forget, EXIT_OK
    if c == "trust":
        from .jobs.trust import accept

        return accept(ctx), render.trust_accepted, EXIT_OK
    if c == "prune":
        from .jobs.prune import prune

        policy = Retention(**{f"keep_{r}": getattr(args, f"keep_{r}") if getattr(args, f"keep_{r}") is not None
                              else getattr(settings.retention, f"keep_{r}")
                              for r in ("last", "daily", "weekly", "monthly")})
        return prune(ctx, policy, args.dry_run), render.prune, EXIT_OK
    if c == "gc":
        from .jobs.gc import gc

        return gc(ctx, args.grace, args.dry_run), render.gc, EXIT_OK
    if c == "state":
        from .jobs import proxy_state
        from .jobs.maintenance import rebuild_state

        if args.action == "backup":
            return proxy_state.backup_state(ctx), render.state_saved, EXIT_OK
        if args.action == "restore":
            out = Path(args.config_out) if args.config_out else None
            return (proxy_state.restore_state(ctx, args.state_id, out, args.force, confirm=_confirmer(args.yes)),
                    render.state_restored, EXIT_OK)
        return rebuild_state(ctx, _disk_key(args.source, settings)), render.state, EXIT_OK
    if c == "recover":
        from .jobs.proxy_state import recover

        out = Path(args.config_out) if args.config_out else settings.workdir / "stackvault.toml"
        return recover(ctx, out, args.force, confirm=_confirmer(args.yes)), render.recovered, EXIT_OK
    if c == "catalog":
        from .jobs.maintenance import rebuild_catalog

        kept = ctx.set_damaged_catalog_aside()
        return {**rebuild_catalog(ctx), **({"damaged_kept_as": kept} if kept else {})}, render.catalog, EXIT_OK
    raise UsageError(f"unknown command {c!r}", "see `stackvault --help`")


def _doctor(args: argparse.Namespace, settings) -> tuple[dict, Callable[[dict], str], int]:
    from .cloud.connection import connect
    from .cloud.inventory import Selection
    from .jobs.doctor import doctor, fix_images

    conn = connect(settings.cloud.os_cloud)
    selection = Selection(servers=args.server, all_servers=args.all, tags=args.server_tag, exclude=args.exclude,
                          **_share(settings))
    report = doctor(conn, selection, args.require_consistency or settings.cloud.require_consistency,
                    repo_id=_configured_repo_id(settings, args), parallel=settings.cloud.parallel)
    if args.fix_images:
        report["fix_images"] = fix_images(conn, report, (lambda _question: True) if args.yes else _confirm)
    return report, render.doctor, EXIT_OK if report["ok"] else EXIT_FAILED


def _configured_repo_id(settings, args: argparse.Namespace) -> str | None:
    """The id of the configured repository, for the doctor to tell its bases from others'; None
    without one, or when it cannot be opened (the doctor then leaves that check out)."""
    if not settings.repo:
        return None
    from .engine.keys import ENV, PassphraseError
    from .engine.repository import Repository

    ctx = JobContext(settings, args.passphrase_file)
    try:
        try:
            return Repository.open(ctx.backend).id  # a plain repository: no passphrase, no prompt
        except PassphraseError:
            if not (args.passphrase_file or os.environ.get(ENV)):
                raise  # the doctor asks for no passphrase on a terminal
            return ctx.repo.id
    except StackvaultError as exc:
        warn(f"the doctor does not tell this repository's base snapshots from others': {exc}")
        return None


def _records(ctx: JobContext, disk_key: str | None) -> tuple[list, dict]:
    """`list` without a catalog: the repository's backup records (they carry every field a catalog row
    shows), and what `sync_catalog` would have said of them (nothing can be missing without a catalog)."""
    records, damaged = ctx.repo.scan()
    rows = [r for r in records if disk_key is None or any(d.disk_key == disk_key for d in r.disks)]
    return rows, {"missing": [], "ids": ctx.repo.backup_ids(),
                  "damaged": [{"backup_id": b, "problem": e.problem} for b, e in sorted(damaged.items())]}


def _listed_share(args: argparse.Namespace):  # a cloud.inventory.Selection or None
    """`list --availability-zone / --shard`: the backups of one proxy's share (only when asked for)."""
    if not (args.availability_zone or args.shard):
        return None
    from .cloud.inventory import Selection
    from .config import parse_shard

    return Selection(availability_zones=list(args.availability_zone),
                     shard=parse_shard(args.shard, "--shard") if args.shard else None)


def _noting_interrupted(ctx: JobContext, result: dict) -> dict:
    """`list` and `show` also name the jobs that stopped without finishing (a killed proxy's)."""
    from .jobs.maintenance import interrupted_jobs

    stopped = interrupted_jobs(ctx)
    return {**result, "interrupted_jobs": stopped} if stopped else result


def _share(settings: Settings) -> dict:
    azs, shard = settings.share()
    return {"availability_zones": azs, "shard": shard}


def _key(ctx: JobContext, args: argparse.Namespace) -> tuple[dict, Callable[[dict], str], int]:
    repo = ctx.repo
    if args.action == "list":
        return {"repo": repo.location, "keys": repo.list_keys()}, render.key_list, EXIT_OK
    if args.action == "add":
        from .engine.keys import NEW_ENV, new_passphrase

        repo.list_keys()  # refuses a plain repository before asking for a passphrase
        secret = new_passphrase(repo.location, args.new_passphrase_file, NEW_ENV, "--new-passphrase-file")
        return {"repo": repo.location, "added": repo.add_key(secret)}, render.key_added, EXIT_OK
    if not args.key_id:
        raise UsageError("which key slot to remove?", "give its id: `stackvault key remove ID` (see `key list`)")
    with ctx.lock("exclusive", "key remove"):  # two removals at once must not leave no slot
        repo.remove_key(args.key_id)
    return {"repo": repo.location, "removed": args.key_id}, render.key_removed, EXIT_OK


def _confirmer(yes: bool) -> Callable[[str], bool] | None:
    """--yes answers every question; else a terminal asks; else nobody can answer (None: the job refuses)."""
    if yes:
        return lambda _question: True
    return _confirm if sys.stdin is not None and sys.stdin.isatty() else None


def _confirm(question: str) -> bool:
    """y/N on the terminal (stderr, so --json output stays one document); no answer is no."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _cloud_restore(ctx: JobContext, args: argparse.Namespace, kind: str, name: str, progress) -> dict:
    from .cloud.connection import connect
    from .jobs import cloud_restore

    if not name:
        raise UsageError(f"restore target {args.to!r} names nothing", f"write --to {kind}:NAME")
    with ctx.lock("read", f"restore {args.backup}") as lock:
        if lock.warning:
            warn(lock.warning)
        record = ctx.repo.get_backup(ctx.repo.resolve(args.backup))
        conn = connect(ctx.settings.cloud.os_cloud)
        if kind == "server":
            return cloud_restore.restore_server(ctx, conn, record, name, flavor=args.flavor, network=args.network,
                                                key_name=args.key_name, force=args.force, progress=progress)
        disk = record.disk(args.disk)
        if kind == "image":
            return cloud_restore.restore_to_image(ctx, conn, record, disk, name, force=args.force, progress=progress)
        return cloud_restore.restore_to_volume(ctx, conn, record, disk, name, force=args.force, progress=progress)


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # every file and directory the proxy makes (catalog, state, staging, temp) is its user's alone
    parser = build_parser()
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        args = parser.parse_args(argv)
        result, renderer, code = run(args)
    except StackvaultError as exc:
        if as_json:
            print(json.dumps({"status": "failed", "error": str(exc)}))
        print(f"stackvault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stackvault: interrupted; nothing was committed by the interrupted job", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    elif not args.quiet or code != EXIT_OK:
        print(renderer(result))
    return code


if __name__ == "__main__":
    sys.exit(main())
