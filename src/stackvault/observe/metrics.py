"""Prometheus metrics computed from the catalog at scrape time, as a textfile or over HTTP.

A custom collector reads the jobs and backups tables each time it is asked, rather than counters
kept in memory: the numbers survive restarts, agree between the proxies that share a PostgreSQL
catalog, and a cron user gets the same metrics by writing them to node_exporter's textfile
directory. Labels name a repository, a server/volume/disk (its id and name) or a proxy host, never
a job, so the number of series follows the number of things backed up, not the number of runs.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..catalog.models import BackupRow, JobRow, PolicyItemRow, PolicyRunRow
from ..cloud.consistency import RANK
from ..engine.atomic import write_atomic
from ..errors import StackvaultError, UsageError, warn
from .targets import Target, target

#: Consistency as a number, so that an alert can compare a backup's with the required one; a proof
#: of quiesce read back from the disk ranks above a quiesce only asked of Nova.
CONSISTENCY_RANK = {**RANK, "application (verified)": RANK["application"] + 1}
#: Job statuses that count as a failure; `partial` is a cloud job where some servers failed.
FAILED = ("failed", "partial", "interrupted")
SUCCEEDED = ("success", "warning")
TARGET_LABELS = ["repo", "kind", "id", "name"]
#: node_exporter reads the textfile as its own user: metrics hold no secret, so the file is readable.
TEXTFILE_MODE = 0o644


def target_of(row: BackupRow) -> Target:
    return target(row.source, row.name, [d.disk_key for d in row.disks])


def timestamp(iso: str | None) -> float | None:
    """Unix time of a catalog's ISO time (None for a missing or unreadable one)."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


class CatalogCollector(Collector):
    """Every metric, from one read of the catalog per scrape."""

    def __init__(self, catalog_url: str, required_consistency: str) -> None:
        self.catalog_url = catalog_url
        self.required_consistency = required_consistency
        self._engine: Engine | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read at registration: the catalog may not be reachable yet

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("stackvault_catalog_up", "1 if the catalog could be read for this scrape")
        required = GaugeMetricFamily("stackvault_required_consistency",
                                     "The configured require_consistency as a rank (crash 0, unknown 1, "
                                     "application 2, application verified 3)")
        required.add_metric([], CONSISTENCY_RANK[self.required_consistency])
        yield required
        try:
            backups, jobs, queue = self._read()
        except (StackvaultError, SQLAlchemyError) as exc:
            warn(f"metrics: the catalog cannot be read: {(str(exc).splitlines() or [''])[0]}")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        names = current_names(backups, jobs)
        yield from _backup_metrics(backups, names)
        yield from _failure_metrics(jobs, names)
        yield from _job_metrics(jobs)
        yield from _queue_metrics(queue)

    def _read(self) -> tuple[list[BackupRow], list[JobRow], QueueDepth]:
        if self._engine is None:
            from ..catalog import Catalog

            self._engine = Catalog(self.catalog_url).engine
        return (*catalog_rows(self._engine), queue_depth(self._engine))


def catalog_rows(engine: Engine) -> tuple[list[BackupRow], list[JobRow]]:
    """Every backup (with its disks) and job row: one catalog holds one row per run, not per block."""
    with Session(engine) as s:
        backups = list(s.scalars(select(BackupRow)))
        for row in backups:
            _ = row.disks  # loaded while the session is open
        return backups, list(s.scalars(select(JobRow)))


#: (repo, policy, zone, status) -> items: the unfinished part of the policy queue.
QueueDepth = dict[tuple[str, str, str, str], int]
#: The item states a queue metric counts (a done item has left the queue).
QUEUE_STATES = ("queued", "claimed")


def queue_depth(engine: Engine) -> QueueDepth:
    """Items of unfinished policy runs by state, counted by the database (one row per policy and zone)."""
    q = (select(PolicyRunRow.repo_id, PolicyRunRow.policy, PolicyItemRow.availability_zone, PolicyItemRow.status,
                func.count())
         .join(PolicyRunRow, PolicyRunRow.id == PolicyItemRow.run_id)
         .where(PolicyItemRow.status.in_(QUEUE_STATES), PolicyRunRow.status != "done")
         .group_by(PolicyRunRow.repo_id, PolicyRunRow.policy, PolicyItemRow.availability_zone, PolicyItemRow.status))
    with Session(engine) as s:
        return {(repo, policy, zone or "", status): n for repo, policy, zone, status, n in s.execute(q)}


def _queue_metrics(depth: QueueDepth) -> Iterator[Metric]:
    """Both states of every (repo, policy, zone) with work, 0 included, so that an alert can tell
    "queued, and nobody takes it" from "queued behind claimed work"."""
    items = GaugeMetricFamily("stackvault_policy_queue_items",
                              "Servers and volumes of unfinished policy runs, waiting (queued) or being backed up "
                              "(claimed), per policy and availability zone",
                              labels=["repo", "policy", "zone", "status"])
    for repo, policy, zone in sorted({key[:3] for key in depth}):
        for status in QUEUE_STATES:
            items.add_metric([repo, policy, zone, status], depth.get((repo, policy, zone, status), 0))
    yield items


#: What a series is of: (repo, kind, id). A server renamed keeps its series; `name` is a label of it.
SeriesKey = tuple[str, str, str]


def _failed_target(job: JobRow) -> Target | None:
    """The server, volume or disk a failed backup job names (`jobs.backup` records it), if any."""
    named = (job.report or {}).get("target")
    if job.kind != "backup" or job.status not in FAILED or not isinstance(named, dict):
        return None
    return Target(str(named.get("kind", "")), str(named.get("id", "")), str(named.get("name", "")))


def current_names(backups: list[BackupRow], jobs: list[JobRow]) -> dict[SeriesKey, str]:
    """Each server's, volume's and disk's newest name among its backups and failed backups: its series
    carry that one, so that a renamed server's series go on under the new name instead of a stale one
    staying beside it."""
    newest: dict[SeriesKey, tuple[float, str]] = {}
    seen = [(row.repo_id, target_of(row), timestamp(row.finished) or 0.0) for row in backups]
    seen += [(job.repo_id, what, timestamp(job.finished or job.started) or 0.0)
             for job in jobs if (what := _failed_target(job)) is not None]
    for repo, what, when in seen:
        key = (repo, what.kind, what.id)
        if key not in newest or when >= newest[key][0]:
            newest[key] = (when, what.name)
    return {key: name for key, (_, name) in newest.items()}


def _backup_metrics(rows: list[BackupRow], names: dict[SeriesKey, str]) -> Iterator[Metric]:
    latest: dict[SeriesKey, BackupRow] = {}
    count: dict[str, int] = {}
    for row in rows:
        count[row.repo_id] = count.get(row.repo_id, 0) + 1
        if row.status not in SUCCEEDED:
            continue
        what = target_of(row)
        key = (row.repo_id, what.kind, what.id)
        if key not in latest or (row.finished, row.backup_id) > (latest[key].finished, latest[key].backup_id):
            latest[key] = row
    backups = GaugeMetricFamily("stackvault_backups", "Backups the catalog holds per repository", labels=["repo"])
    for repo, n in sorted(count.items()):
        backups.add_metric([repo], n)
    yield backups
    when = GaugeMetricFamily("stackvault_backup_last_success_timestamp_seconds",
                             "When the newest successful backup of a server, volume or disk finished",
                             labels=TARGET_LABELS)
    duration = GaugeMetricFamily("stackvault_backup_last_success_duration_seconds",
                                 "How long the newest successful backup took", labels=TARGET_LABELS)
    read = GaugeMetricFamily("stackvault_backup_last_success_read_bytes",
                             "Bytes the newest successful backup read from its disks", labels=TARGET_LABELS)
    stored = GaugeMetricFamily("stackvault_backup_last_success_stored_bytes",
                               "Bytes the newest successful backup added to the repository (compressed, new chunks)",
                               labels=TARGET_LABELS)
    consistency = GaugeMetricFamily("stackvault_backup_last_success_consistency",
                                    "Consistency rank of the newest successful backup (crash 0, unknown 1, "
                                    "application 2, application verified 3); absent for disk images",
                                    labels=TARGET_LABELS)
    info = GaugeMetricFamily("stackvault_backup_last_success_info",
                             "Always 1: the level and consistency of the newest successful backup as labels",
                             labels=[*TARGET_LABELS, "level", "consistency"])
    for key, row in sorted(latest.items()):
        labels = [*key, names[key]]
        finished = timestamp(row.finished)
        if finished is not None:
            when.add_metric(labels, finished)
        duration.add_metric(labels, row.duration_s)
        read.add_metric(labels, row.bytes_read)
        stored.add_metric(labels, row.bytes_stored)
        if row.consistency in CONSISTENCY_RANK:
            consistency.add_metric(labels, CONSISTENCY_RANK[row.consistency])
        info.add_metric([*labels, row.level, row.consistency or ""], 1)
    yield from (when, duration, read, stored, consistency, info)


def _failure_metrics(jobs: list[JobRow], names: dict[SeriesKey, str]) -> Iterator[Metric]:
    """Failed backups of each server/volume/disk, where the failed job's row names what it backed up."""
    failures: dict[SeriesKey, list[float]] = {}
    for job in jobs:
        what = _failed_target(job)
        if what is not None:
            failures.setdefault((job.repo_id, what.kind, what.id), []).append(
                timestamp(job.finished or job.started) or 0.0)
    total = CounterMetricFamily("stackvault_backup_failures",
                                "Failed backups of a server, volume or disk, as the catalog records them",
                                labels=TARGET_LABELS)
    last = GaugeMetricFamily("stackvault_backup_last_failure_timestamp_seconds",
                             "When the newest failed backup of a server, volume or disk ended", labels=TARGET_LABELS)
    for key, times in sorted(failures.items()):
        labels = [*key, names[key]]
        total.add_metric(labels, len(times))
        last.add_metric(labels, max(times))
    yield from (total, last)


def _job_metrics(jobs: list[JobRow]) -> Iterator[Metric]:
    by_kind: dict[tuple[str, str, str], int] = {}
    last_failure: dict[tuple[str, str], float] = {}
    last_finished: dict[tuple[str, str], float] = {}
    running: dict[tuple[str, str], int] = {}
    verify: dict[str, JobRow] = {}
    gc: dict[str, JobRow] = {}
    for job in jobs:
        by_kind[(job.repo_id, job.kind, job.status)] = by_kind.get((job.repo_id, job.kind, job.status), 0) + 1
        ended = timestamp(job.finished)
        if job.status == "running":
            running[(job.repo_id, job.kind)] = running.get((job.repo_id, job.kind), 0) + 1
        if job.status in FAILED and ended is not None:
            key = (job.repo_id, job.kind)
            last_failure[key] = max(last_failure.get(key, 0.0), ended)
        if job.status != "running" and ended is not None and job.host:
            key = (job.repo_id, job.host)
            last_finished[key] = max(last_finished.get(key, 0.0), ended)
        if job.kind == "verify" and job.status != "running" and (job.report or {}).get("whole_repository"):
            _keep_newest(verify, job)
        if job.kind == "gc" and job.status == "success" and not (job.report or {}).get("dry_run"):
            _keep_newest(gc, job)
    jobs_total = CounterMetricFamily("stackvault_jobs", "Jobs the catalog records, by kind and how they ended",
                                     labels=["repo", "kind", "status"])
    for (repo, kind, status), n in sorted(by_kind.items()):
        if status != "running":
            jobs_total.add_metric([repo, kind, status], n)
    running_now = GaugeMetricFamily("stackvault_jobs_running", "Jobs running now (under a live lease or not yet "
                                    "marked interrupted)", labels=["repo", "kind"])
    for (repo, kind), n in sorted(running.items()):
        running_now.add_metric([repo, kind], n)
    failed = GaugeMetricFamily("stackvault_job_last_failure_timestamp_seconds",
                               "When the newest failed job of this kind ended", labels=["repo", "kind"])
    for (repo, kind), t in sorted(last_failure.items()):
        failed.add_metric([repo, kind], t)
    finished = GaugeMetricFamily("stackvault_proxy_last_job_finished_timestamp_seconds",
                                 "When a job run by this proxy host last ended, whatever its status",
                                 labels=["repo", "host"])
    for (repo, host), t in sorted(last_finished.items()):
        finished.add_metric([repo, host], t)
    yield from (jobs_total, running_now, failed, finished)
    yield from _verify_metrics(verify)
    yield from _gc_metrics(gc)


def _keep_newest(latest: dict[str, JobRow], job: JobRow) -> None:
    """Keeps in `latest` the newest finished job per repository."""
    if job.repo_id not in latest or (job.finished or "") > (latest[job.repo_id].finished or ""):
        latest[job.repo_id] = job


def _verify_metrics(latest: dict[str, JobRow]) -> Iterator[Metric]:
    when = GaugeMetricFamily("stackvault_verify_last_timestamp_seconds",
                             "When the newest verify of the whole repository ended", labels=["repo", "deep"])
    damaged = GaugeMetricFamily("stackvault_verify_last_damaged_objects",
                                "Damaged or missing chunks, indexes, records, key slots and backups the newest "
                                "verify found (0: all good)", labels=["repo"])
    for repo, job in sorted(latest.items()):
        report = job.report or {}
        ended = timestamp(job.finished)
        if ended is not None:
            when.add_metric([repo, "true" if report.get("deep") else "false"], ended)
        damaged.add_metric([repo], int(report.get("damaged", 0)))
    yield from (when, damaged)


def _gc_metrics(latest: dict[str, JobRow]) -> Iterator[Metric]:
    when = GaugeMetricFamily("stackvault_gc_last_timestamp_seconds", "When the newest gc ended", labels=["repo"])
    chunks = GaugeMetricFamily("stackvault_repository_chunks",
                               "Chunks the repository kept at its newest gc (its size in chunks)", labels=["repo"])
    freed = GaugeMetricFamily("stackvault_gc_last_freed_bytes", "Bytes the newest gc deleted", labels=["repo"])
    for repo, job in sorted(latest.items()):
        report = job.report or {}
        ended = timestamp(job.finished)
        if ended is not None:
            when.add_metric([repo], ended)
        chunks.add_metric([repo], int(report.get("chunks_kept", 0)))
        freed.add_metric([repo], int(report.get("bytes_freed", 0)))
    yield from (when, chunks, freed)


def registry(catalog_url: str, required_consistency: str) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CatalogCollector(catalog_url, required_consistency))
    return reg


def exposition(catalog_url: str, required_consistency: str) -> bytes:
    """The metrics in Prometheus' text format, read from the catalog now."""
    return generate_latest(registry(catalog_url, required_consistency))


def write_textfile(path: str, catalog_url: str, required_consistency: str) -> dict:
    """For node_exporter's textfile collector (cron users): replaced atomically, so a scrape never reads
    half a file. The name must end in `.prom`, or node_exporter ignores it."""
    if not path.endswith(".prom"):
        raise UsageError(f"metrics textfile {path} does not end in .prom",
                         "node_exporter's textfile collector reads only *.prom files: name it e.g. stackvault.prom")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UsageError(f"the directory of metrics textfile {path} does not exist",
                         "create it, or give node_exporter's --collector.textfile.directory")
    data = exposition(catalog_url, required_consistency)
    write_atomic(path, data, mode=TEXTFILE_MODE)
    return {"textfile": path, "bytes": len(data)}


def wsgi_app(catalog_url: str, required_consistency: str):
    """A WSGI app answering `/metrics` from the catalog: what `stackvault server` mounts."""
    return make_wsgi_app(registry(catalog_url, required_consistency))


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9150` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT", "write e.g. --listen 127.0.0.1:9150")
    return host, int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per scrape would flood a service's log


def listen(address: str, catalog_url: str, required_consistency: str) -> tuple[WSGIServer, str]:
    """A server for `/metrics` bound to `address` (HOST:PORT), not yet serving, and where it is bound."""
    host, port = parse_listen(address)
    server_class = type("Server", (WSGIServer,), {"address_family": socket.AF_INET6}) if ":" in host else WSGIServer
    try:
        server: WSGIServer = make_server(host, port, wsgi_app(catalog_url, required_consistency), server_class, _Quiet)
    except OSError as exc:
        raise UsageError(f"cannot listen on {address}: {exc.strerror}",
                         "pick a free port and a local address") from None
    bound = f"{host}:{server.server_port}" if ":" not in host else f"[{host}]:{server.server_port}"
    print(f"stackvault: serving metrics on http://{bound}/metrics", file=sys.stderr, flush=True)
    return server, bound


def serve(address: str, catalog_url: str, required_consistency: str) -> dict:
    """Serve `/metrics` until SIGTERM or Ctrl-C (`stackvault metrics --listen`); says where on stderr."""
    server, bound = listen(address, catalog_url, required_consistency)

    def stop(_signum: int, _frame: object) -> None:
        # From another thread: shutdown() waits for serve_forever's loop, which runs in this one. A scrape
        # being answered is finished first.
        threading.Thread(target=server.shutdown, name="sv-metrics-stop", daemon=True).start()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return {"listened": bound}
