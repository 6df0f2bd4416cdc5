"""Copying backups to a second repository: `copy`."""

from __future__ import annotations

import argparse

from .. import render
from ..engine.keys import TO_ENV
from ..engine.manifest import BackupRecord
from .command import Outcome, command
from .invocation import Invocation
from .listing import listed_share, of_server
from .parser import share_options

TO_PASSPHRASE_OPTION = "--to-passphrase-file"  # noqa: S105 - the name of an option, not a passphrase


def _copy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("backup", nargs="*", help="backup ids (or unique prefixes, or `latest`); default: every backup")
    p.add_argument("--to", required=True, metavar="REPO",
                   help="the repository to copy to, already made with `stackvault init` (as --repo takes it)")
    p.add_argument(TO_PASSPHRASE_OPTION, default=None, metavar="PATH",
                   help=f"its passphrase when encrypted (else {TO_ENV}, else asked on a terminal)")
    p.add_argument("--source", default=None, metavar="file:PATH", help="only the backups holding this disk")
    p.add_argument("--server", default=None, metavar="NAME|ID", help="only the backups of this server")
    share_options(p)


@command("copy", "copy backups to a second repository, sending only what it lacks", arguments=_copy_arguments,
         renderer=render.copy, recorded_as="copy")
def copy(inv: Invocation) -> Outcome:
    from ..jobs.copy import copy as copy_backups
    from ..jobs.copy import second_site

    args = inv.args
    target = second_site(inv.ctx, args.to, args.to_passphrase_file, TO_PASSPHRASE_OPTION)
    disk_key, share = inv.disk_key(args.source), listed_share(args)

    def selected(record: BackupRecord) -> bool:
        return ((disk_key is None or any(d.disk_key == disk_key for d in record.disks))
                and (not args.server or of_server(record.source, args.server))
                and (share is None or share.covers_backup(record.source)))

    return Outcome(copy_backups(inv.ctx, target, args.backup, selected, inv.progress))
