"""Commands that report on the proxy's jobs: `metrics` (Prometheus) and `notify --summary` (docs/monitoring.md)."""

from __future__ import annotations

import argparse

from ..config import seconds
from ..errors import UsageError
from .command import EXIT_FAILED, EXIT_OK, Outcome, command
from .invocation import Invocation
from .parser import checked

DAY_S = 86400.0


def _metrics_arguments(p: argparse.ArgumentParser) -> None:
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--textfile", metavar="PATH",
                     help="write them to this *.prom file, atomically (node_exporter's textfile directory)")
    out.add_argument("--listen", metavar="HOST:PORT", help="serve them on http://HOST:PORT/metrics until stopped")


@command("metrics", "Prometheus metrics from the catalog: into a node_exporter textfile, or served on /metrics",
         arguments=_metrics_arguments)
def metrics(inv: Invocation) -> Outcome:
    from ..observe import metrics as exporter

    settings, args = inv.settings, inv.args
    required = settings.cloud.require_consistency
    if args.textfile:
        written = exporter.write_textfile(args.textfile, settings.catalog_url, required)
        return Outcome(written, renderer=lambda r: f"Metrics written to {r['textfile']} ({r['bytes']} bytes)")
    return Outcome(exporter.serve(args.listen, settings.catalog_url, required), renderer=lambda r: "")


def _notify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", action="store_true", required=True,
                   help="the summary of the jobs the catalog recorded in the period (daily, from a timer)")
    p.add_argument("--period", type=checked(lambda v, o: seconds(v, o, positive=True), "--period"), default=DAY_S,
                   metavar="DURATION", help="the period the summary covers, up to now (default 1d)")


@command("notify", "send notifications to the [notify] urls", arguments=_notify_arguments)
def notify(inv: Invocation) -> Outcome:
    from ..catalog import Catalog
    from ..observe.metrics import catalog_rows
    from ..observe.notify import Event, send
    from ..observe.summary import summary

    settings = inv.settings
    if not settings.notify.urls:
        raise UsageError("no notification targets", "add urls = [...] to [notify] in the config (docs/monitoring.md)")
    if Event.SUMMARY not in settings.notify.on:
        return Outcome({"sent_to": [], "skipped": "summary is not in [notify] on"},
                       renderer=lambda r: f"No summary sent: {r['skipped']}")
    title, body = summary(*catalog_rows(Catalog(settings.catalog_url).engine), inv.args.period)
    reached = send(settings.notify, title, body, Event.SUMMARY)
    result = {"title": title, "sent_to": reached, "targets": len(settings.notify.urls)}
    return Outcome(result, EXIT_OK if reached else EXIT_FAILED,
                   lambda r: f"Summary sent to {len(r['sent_to'])} of {r['targets']} targets: {r['title']}")
