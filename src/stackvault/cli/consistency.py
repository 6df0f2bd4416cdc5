"""Commands about the consistency of servers' backups: `doctor`, `guest-hook` (docs/consistency.md)."""

from __future__ import annotations

import argparse
import os

from .. import render
from ..config import Settings
from ..domain import Consistency
from ..errors import StackvaultError, warn
from ..jobs.context import JobContext
from .command import EXIT_FAILED, EXIT_OK, Outcome, command
from .invocation import Invocation, confirm
from .parser import enum_choice, share_options


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", action="append", default=[], metavar="NAME|ID", help="a server (name globs work)")
    p.add_argument("--all", action="store_true", help="every server of the project (the default)")
    p.add_argument("--server-tag", action="append", default=[], metavar="TAG", help="servers with this tag")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME|ID")
    p.add_argument("--require-consistency", **enum_choice(Consistency), default=None,
                   help="the policy to check (default: [cloud] require_consistency); exit 1 when not met")
    share_options(p)
    p.add_argument("--fix-images", action="store_true", help="set the guest agent properties on the images")
    p.add_argument("--yes", action="store_true", help="with --fix-images: do not ask for confirmation")


@command("doctor", "the consistency each server's next backup will have, why, and the fix",
         arguments=_doctor_arguments, renderer=render.doctor)
def doctor(inv: Invocation) -> Outcome:
    from ..cloud.connection import connect
    from ..cloud.inventory import Selection
    from ..jobs.doctor import doctor as diagnose
    from ..jobs.doctor import fix_images

    args, settings = inv.args, inv.settings
    conn = connect(settings.cloud.os_cloud)
    selection = Selection(servers=args.server, all_servers=args.all, tags=args.server_tag, exclude=args.exclude,
                          **inv.share)
    report = diagnose(conn, selection, args.require_consistency or settings.cloud.require_consistency,
                      repo_id=_configured_repo_id(settings, args), parallel=settings.cloud.parallel)
    if args.fix_images:
        report["fix_images"] = fix_images(conn, report, (lambda _question: True) if args.yes else confirm)
    return Outcome(report, EXIT_OK if report["ok"] else EXIT_FAILED)


def _configured_repo_id(settings: Settings, args: argparse.Namespace) -> str | None:
    """The id of the configured repository, for the doctor to tell its bases from others'; None
    without one, or when it cannot be opened (the doctor then leaves that check out)."""
    if not settings.repo:
        return None
    from ..engine.keys import ENV, PassphraseError

    ctx = JobContext(settings, args.passphrase_file)
    try:
        try:
            return ctx.open_repository().id  # a plain repository: no passphrase, no prompt
        except PassphraseError:
            if not (args.passphrase_file or os.environ.get(ENV)):
                raise  # the doctor asks for no passphrase on a terminal
            return ctx.repo.id
    except StackvaultError as exc:
        warn(f"the doctor does not tell this repository's base snapshots from others': {exc}")
        return None


@command("guest-hook", "print the fsfreeze hook to install in guests (/etc/qemu-ga/fsfreeze-hook.d/)",
         renderer=render.guest_hook)
def guest_hook(inv: Invocation) -> Outcome:
    from ..cloud import guest_hook as hook

    return Outcome({"path": hook.HOOK_PATH, "marker": hook.MARKER_PATH, "script": hook.hook_script(),
                    "steps": hook.install_steps()})
