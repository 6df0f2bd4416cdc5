"""Commands about this proxy's own state: `trust`, `state`, `recover`, `catalog` (docs/disaster-recovery.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import render
from .command import Outcome, command
from .invocation import Invocation, confirmer


def _trust_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("accept",),
                   help="accept: remember the repository as it is now (after a deliberate change)")


@command("trust", "what this proxy remembers of the repository (to notice a replaced or rolled back one)",
         arguments=_trust_arguments, renderer=render.trust_accepted)
def trust(inv: Invocation) -> Outcome:
    from ..jobs.trust import accept

    return Outcome(accept(inv.ctx))


def _state_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("rebuild", "backup", "restore"))
    p.add_argument("state_id", nargs="?", default=None, help="restore: which saved state (default: the newest)")
    p.add_argument("--source", default=None, metavar="file:PATH", help="rebuild: only this disk")
    p.add_argument("--config-out", default=None, metavar="PATH", help="restore: write the saved config here")
    p.add_argument("--force", action="store_true", help="restore: overwrite an existing config file")
    p.add_argument("--yes", action="store_true",
                   help="restore: take saved state that cannot be authenticated (a plain repository's) or whose "
                        "config points to another repository, without asking")


@command("state", "the proxy's working state: rebuild it from the repository, save it there, restore it",
         arguments=_state_arguments)
def state(inv: Invocation) -> Outcome:
    from ..jobs import proxy_state
    from ..jobs.maintenance import rebuild_state

    args = inv.args
    if args.action == "backup":
        return Outcome(proxy_state.backup_state(inv.ctx), renderer=render.state_saved)
    if args.action == "restore":
        out = Path(args.config_out) if args.config_out else None
        return Outcome(proxy_state.restore_state(inv.ctx, args.state_id, out, args.force, confirm=confirmer(args.yes)),
                       renderer=render.state_restored)
    return Outcome(rebuild_state(inv.ctx, inv.disk_key(args.source)), renderer=render.state)


def _recover_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-out", default=None, metavar="PATH",
                   help="where to write the recovered config (default: <workdir>/stackvault.toml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")
    p.add_argument("--yes", action="store_true",
                   help="take saved state that cannot be authenticated (a plain repository's) or whose config "
                        "points to another repository, without asking")


@command("recover", "make this a working proxy from the repository alone (config, catalog, working state)",
         arguments=_recover_arguments, renderer=render.recovered)
def recover(inv: Invocation) -> Outcome:
    from ..jobs.proxy_state import recover as recover_proxy

    args = inv.args
    out = Path(args.config_out) if args.config_out else inv.settings.workdir / "stackvault.toml"
    return Outcome(recover_proxy(inv.ctx, out, args.force, confirm=confirmer(args.yes)))


def _catalog_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("rebuild",))


@command("catalog", "the catalog database", arguments=_catalog_arguments, renderer=render.catalog)
def catalog(inv: Invocation) -> Outcome:
    from ..jobs.maintenance import rebuild_catalog

    inv.ctx.repo  # noqa: B018 - open (and unlock) the repository before the catalog is touched
    kept = inv.ctx.set_damaged_catalog_aside()
    result = {**rebuild_catalog(inv.ctx), **({"damaged_kept_as": kept} if kept else {})}
    if kept:  # backups come back from the repository; the policies written through the API do not
        lost = ("the policies written through the API stayed in the damaged catalog: `stackvault recover` "
                "puts back those of the newest saved proxy state")
        result["warning"] = f"{result['warning']}; {lost}" if "warning" in result else lost
    return Outcome(result)
