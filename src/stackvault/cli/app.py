"""`stackvault`'s main: parse, prepare what every command shares, run the command under what its
table entry declares (its lock), print the result (`--json` or its renderer), return its exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack

from .. import logs
from ..engine.fileio import make_private
from ..engine.staging import StagingLedger
from ..errors import StackvaultError, warn
from ..observe.job_end import notified
from ..progress import DEFAULT_INTERVAL_S, progress_display, progress_mode
from .command import COMMANDS, EXIT_OK, Outcome
from .invocation import Invocation
from .parser import build_parser


def run(args: argparse.Namespace) -> Outcome:
    """Run the parsed command; its Outcome carries the result, exit code and renderer."""
    cmd = COMMANDS[args.command]
    inv = Invocation.from_args(args)
    make_private(inv.settings.workdir)  # state, catalog, memory of repositories: made open by an older version?
    for path in StagingLedger(inv.settings.workdir).sweep():  # a killed restore's, whatever this command is
        print(f"stackvault: removed {path}, left by a killed restore", file=sys.stderr)
    lock = cmd.lock_for(args)
    with ExitStack() as held:
        interval = DEFAULT_INTERVAL_S if args.progress_interval is None else args.progress_interval
        inv.progress = held.enter_context(progress_display(progress_mode(args.quiet, args.json), interval))
        if lock is not None:
            taken = held.enter_context(inv.ctx.lock(lock.kind, lock.job))
            if lock.warn_unlocked and taken.warning:
                warn(taken.warning)
        outcome = cmd.handler(inv)
    if outcome.renderer is None:
        outcome.renderer = cmd.renderer
    return outcome


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # every file and directory the proxy makes (catalog, state, staging, temp) is its user's alone
    parser = build_parser()
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        args = parser.parse_args(argv)
        logs.configure(args.verbose, args.debug)
        outcome = notified(run, lambda o: o.result, args)  # [notify] hears of a job's failure or warnings
    except StackvaultError as exc:
        if as_json:
            print(json.dumps({"status": "failed", "error": str(exc)}))
        print(f"stackvault: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stackvault: interrupted; nothing was committed by the interrupted job", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(outcome.result, indent=1, default=str))
    elif (not args.quiet or outcome.code != EXIT_OK) and outcome.renderer is not None:
        print(outcome.renderer(outcome.result))
    return outcome.code
