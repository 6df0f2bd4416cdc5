"""`stackvault metrics` and `stackvault notify`: their options, and what they run and print."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..config import Settings

Command = Callable[[str, str], argparse.ArgumentParser]


def add_parsers(cmd: Command) -> None:
    """Adds the commands to the `stackvault` parser; `cmd(name, help)` makes one subcommand."""
    p = cmd("metrics", "Prometheus metrics from the catalog: into a node_exporter textfile, or served on /metrics")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--textfile", metavar="PATH",
                     help="write them to this *.prom file, atomically (node_exporter's textfile directory)")
    out.add_argument("--listen", metavar="HOST:PORT", help="serve them on http://HOST:PORT/metrics until stopped")


def run(args: argparse.Namespace, settings: Settings) -> tuple[dict, Callable[[dict], str], int]:
    from . import metrics

    required = settings.cloud.require_consistency
    if args.textfile:
        written = metrics.write_textfile(args.textfile, settings.catalog_url, required)
        return written, lambda r: f"Metrics written to {r['textfile']} ({r['bytes']} bytes)", 0
    return metrics.serve(args.listen, settings.catalog_url, required), lambda r: "", 0
