"""Commands that make a repository and manage its keys: `init`, `key`."""

from __future__ import annotations

import argparse

from .. import render
from ..config import compression_level, parse_size
from ..errors import UsageError
from .command import Lock, LockKind, Outcome, command
from .invocation import Invocation
from .parser import checked


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--block-size", default=None, help="block size, a power of two from 64KiB to 16MiB (default 512KiB)")
    p.add_argument("--compression-level", type=checked(compression_level, "--compression-level"), default=None,
                   help="zstd level, 1 (fastest, the default) to 22 (smallest); fixed for the repository")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt everything stored (AES-256-GCM) under a passphrase; mandatory from then on")
    p.add_argument("--format", type=int, default=3, choices=(3, 4), dest="repo_format",
                   help="repository format: 3 stores one object per chunk (the default), 4 stores chunks in "
                        "pack files (far fewer requests on an object store)")
    p.add_argument("--pack-size", default=None,
                   help="format 4: the size a pack file is cut at, 1MiB to 1GiB (default 16MiB)")


@command("init", "create a repository", arguments=_init_arguments, renderer=render.init)
def init(inv: Invocation) -> Outcome:
    from ..engine.packs import DEFAULT_PACK_SIZE
    from ..engine.repository import check_block_size, check_pack_size
    from ..jobs.trust import remember

    args, settings = inv.args, inv.settings
    bs = parse_size(args.block_size) if args.block_size else settings.block_size
    check_block_size(bs, args.block_size)
    level = args.compression_level if args.compression_level is not None else settings.compression_level
    secret = None
    if args.encrypt:
        from functools import partial

        from ..engine.keys import ENV, new_passphrase

        secret = partial(new_passphrase, inv.ctx.location, args.passphrase_file, ENV, "--passphrase-file")
    if args.pack_size is not None and args.repo_format < 4:
        raise UsageError("--pack-size needs --format 4", "add --format 4, or leave --pack-size out")
    pack_size = check_pack_size(parse_size(args.pack_size), args.pack_size) if args.pack_size else DEFAULT_PACK_SIZE
    repo = inv.ctx.init_repository(bs, level, passphrase=secret, version=args.repo_format, pack_size=pack_size)
    remember(settings.workdir, repo, None)  # a repository this proxy made is the one it trusts there
    return Outcome({"repo": repo.location, "id": repo.id, "block_size": repo.config.block_size,
                    "encrypted": repo.encrypted, "format": repo.config.version, "pack_size": repo.config.pack_size})


def _key_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("add", "list", "remove"))
    p.add_argument("key_id", nargs="?", default=None, help="remove: the key slot to remove (see `key list`)")
    p.add_argument("--new-passphrase-file", default=None, metavar="PATH",
                   help="add: the new passphrase (else STACKVAULT_NEW_PASSPHRASE, else asked on a terminal)")


def _key_lock(args: argparse.Namespace) -> Lock | None:
    """Two removals at once must not leave no slot."""
    return Lock(LockKind.EXCLUSIVE, "key remove") if args.action == "remove" and args.key_id else None


@command("key", "an encrypted repository's passphrases (key slots)", arguments=_key_arguments, lock=_key_lock)
def key(inv: Invocation) -> Outcome:
    repo, args = inv.ctx.repo, inv.args
    if args.action == "list":
        return Outcome({"repo": repo.location, "keys": repo.list_keys()}, renderer=render.key_list)
    if args.action == "add":
        from ..engine.keys import NEW_ENV, new_passphrase

        repo.list_keys()  # refuses a plain repository before asking for a passphrase
        secret = new_passphrase(repo.location, args.new_passphrase_file, NEW_ENV, "--new-passphrase-file")
        return Outcome({"repo": repo.location, "added": repo.add_key(secret)}, renderer=render.key_added)
    if not args.key_id:
        raise UsageError("which key slot to remove?", "give its id: `stackvault key remove ID` (see `key list`)")
    repo.remove_key(args.key_id)
    return Outcome({"repo": repo.location, "removed": args.key_id}, renderer=render.key_removed)
