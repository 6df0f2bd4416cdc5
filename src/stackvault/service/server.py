"""`stackvault server`: runs the config's policies when they are due, until SIGTERM.

Every `poll_s` the loop queues each enabled policy's due run (`schedule.due_slot`: a run missed while
no server ran is caught up once), claims items of queued runs for its workers (`[cloud] parallel` of
them, only in this proxy's availability zones), and finishes runs whose items are all done. Several
servers sharing a PostgreSQL catalog share the queue; with SQLite one server runs the same code.

The policies are the config's and those written through the API into the catalog (service/policies.py);
the catalog's are read again every `STORED_POLICIES_EVERY_S`, so a policy written, replaced or deleted
through the API is served, changed or dropped without a restart or a SIGHUP.

SIGTERM (and SIGINT) stops claiming; the items being backed up finish, and so their cloud snapshots
and volumes are removed as after any backup; what was not begun stays queued for the next start or
another proxy. SIGHUP reads the config again: policies added, changed or removed take effect at the
next poll, and a config that does not load is refused with a log line while the old one stays.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from ..catalog.policies import StoredPolicies
from ..catalog.queue import Claim, PolicyQueue
from ..config import Policy, Settings
from ..errors import StackvaultError
from ..jobs.context import JobContext
from . import policy_run, systemd
from .policies import PoliciesInForce, policies_in_force
from .policy_run import Connect, call_hooks, enqueue, finish_run, queue_name
from .schedule import due_slot, policy_zone

log = logging.getLogger("stackvault.server")

#: Seconds between two reads of the catalog's policies: a policy written through the API waits at most
#: this long to be served (a read of a few rows, cheap beside the queue's own reads at every poll).
STORED_POLICIES_EVERY_S = 5.0


class PolicyServer:
    ctx: JobContext
    queue: PolicyQueue

    def __init__(self, load: Callable[[], Settings], passphrase_file: str | None, connect: Connect,
                 poll_s: float = 1.0) -> None:
        self.load, self.passphrase_file, self.connect, self.poll_s = load, passphrase_file, connect, poll_s
        self.stopping = threading.Event()
        self.reload_asked = threading.Event()
        # Before the repository, catalog and policies are opened (seconds), since the metrics endpoint
        # may already be up: a SIGTERM meanwhile stops the server cleanly rather than killing it.
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_asked.set())
        self.first_seen: dict[str, datetime] = {}
        self.runs_finished = 0
        self.policies: dict[str, Policy] = {}
        self.verifies: dict[str, Policy] = {}
        self.left_out: dict[str, str] = {}  # stored policies not in force, and why: logged when it changes
        self.policies_read = 0.0  # time.monotonic() of the last read of the catalog's policies
        self._use(load())

    def _use(self, settings: Settings) -> None:
        """Open what the settings name (the repository, which asks for no passphrase twice, and the catalog).

        On a reload naming the same catalog, its engine and queue are kept: the items being backed up hold
        claims that the queue renews. A reload naming another catalog closes the old one's pooled
        connections (items still running reopen one as they need it); each reload used to leave them open.
        """
        ctx = JobContext(settings, self.passphrase_file)
        old: JobContext | None = getattr(self, "ctx", None)
        same_catalog = old is not None and old.settings.catalog_url == settings.catalog_url
        if same_catalog:
            ctx.catalog = old.catalog  # type: ignore[union-attr]  # not None when same_catalog
        stored = StoredPolicies(ctx.catalog, ctx.repo.id)
        try:  # read before anything is swapped: a catalog that does not answer keeps the running setup
            found = policies_in_force(settings, stored)
        except StackvaultError:
            if not same_catalog:
                ctx.catalog.close()
            raise
        if same_catalog:
            if self.queue.repo_id != ctx.repo.id:
                self.queue = PolicyQueue(ctx.catalog, ctx.repo.id)
        else:
            self.queue = PolicyQueue(ctx.catalog, ctx.repo.id)
            if old is not None:
                old.catalog.close()
        self.ctx = ctx
        self.stored = stored
        self.read_policies(found)

    def read_policies(self, found: PoliciesInForce | None = None) -> bool:
        """Take the policies in force now (the settings' and the catalog's, or `found`, just read from
        them); whether they changed."""
        if found is None:
            found = policies_in_force(self.ctx.settings, self.stored)
        self.policies_read = time.monotonic()
        for name, why in found.left_out.items():
            if self.left_out.get(name) != why:
                log.error("policy %s in the catalog is not in force: %s", name, why)
        self.left_out = found.left_out
        policies = {queue_name(p): p for p in found.policies.values() if p.enabled}
        if policies == self.policies:
            return False
        self.policies = policies
        self.verifies = {policy_run.full_verify_name(p): p for p in policies.values() if p.verify_full_schedule}
        return True

    def reload(self) -> None:
        try:
            self._use(self.load())
        except StackvaultError as exc:
            log.error("config not reloaded, the previous one stays: %s", exc)
            return
        log.info("config reloaded: policies %s", ", ".join(sorted(self.policies)) or "none")

    def serve(self) -> dict:
        """Run until SIGTERM or SIGINT; returns what it did."""
        parallel = max(1, self.ctx.settings.cloud.parallel)
        running: dict[Future, Claim] = {}
        finishing: set[Future] = set()
        verifying: set[Future] = set()
        log.info("serving policies %s", ", ".join(sorted(self.policies)) or "none")
        systemd.notify("READY=1")
        with ThreadPoolExecutor(parallel, thread_name_prefix="sv-item") as workers, \
                ThreadPoolExecutor(1, thread_name_prefix="sv-finish") as finisher, \
                ThreadPoolExecutor(1, thread_name_prefix="sv-verify") as verifier:
            while not self.stopping.is_set():
                if self.reload_asked.is_set():
                    self.reload_asked.clear()
                    systemd.notify("RELOADING=1")
                    self.reload()
                    systemd.notify("READY=1")
                try:
                    if time.monotonic() - self.policies_read >= STORED_POLICIES_EVERY_S and self.read_policies():
                        log.info("policies in force: %s", ", ".join(sorted(self.policies)) or "none")
                    self._tick(workers, finisher, running, finishing, parallel)
                    self._verify_tick(verifier, verifying)
                except StackvaultError as exc:  # the catalog or cloud away a while: the next poll tries again
                    log.error("%s", exc)
                except Exception as exc:  # noqa: BLE001 - a database restart, a cloud API's 503: the same
                    log.error("%s: %s (the next poll tries again)", exc.__class__.__name__, exc)
                self.stopping.wait(self.poll_s)
            systemd.notify("STOPPING=1")
            log.info("stopping: %d items finish first, nothing new is started", len(running))
        for future in finishing | verifying:  # a run finished after the last poll: counted and logged all the same
            try:
                self._run_finished(future)
            except Exception as exc:  # noqa: BLE001 - its end could not be written: taken again after its lease
                log.error("a run's end was not recorded: %s: %s", exc.__class__.__name__, exc)
        return {"status": "stopped", "runs_finished": self.runs_finished}

    def _tick(self, workers: ThreadPoolExecutor, finisher: ThreadPoolExecutor, running: dict[Future, Claim],
              finishing: set[Future], parallel: int) -> None:
        ctx, queue, policies = self.ctx, self.queue, dict(self.policies)
        now = datetime.now().astimezone()
        for name, policy in policies.items():
            since = self.first_seen.setdefault(name, now)
            slot = due_slot(policy.schedule, queue.last_slot(name), since, now, policy_zone(policy))
            if slot is not None and enqueue(ctx, queue, policy, slot, self.connect):
                log.info("policy %s: run for %s queued", policy.name, slot.isoformat())
        for future in [f for f in running if f.done()]:
            done = running.pop(future)
            try:
                report = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. the catalog lost: its lease ends, and it is taken again
                log.error("policy %s: %s %s not recorded: %s", done.policy, done.item.kind, done.item.name, exc)
                continue
            log.info("policy %s: %s %s %s", done.policy, done.item.kind, done.item.name, report["status"])
        for name, policy in policies.items():
            for zone in queue.fail_unserved(name, policy.unserved_zone_wait):
                log.error("policy %s: items in availability zone %s failed: no proxy serves the zone", name, zone)
        zones, _ = ctx.settings.share()
        while len(running) < parallel and not self.stopping.is_set():
            claim = queue.claim(set(policies), zones)
            if claim is None:
                break
            policy = policies[claim.policy]
            running[workers.submit(policy_run.work_item, ctx, queue, policy, claim, self.connect)] = claim
        for future in [f for f in finishing if f.done()]:
            finishing.discard(future)
            self._run_finished(future)
        if not finishing:
            run = queue.take_finished_run(set(policies))
            if run is not None:
                finishing.add(finisher.submit(_finish_safely, ctx, queue, policies[run.policy], run.id))

    def _verify_tick(self, verifier: ThreadPoolExecutor, verifying: set[Future]) -> None:
        """Queues each policy's due full deep verify, and runs one at a time beside the backups: it
        reads the whole repository for hours, and must hold up neither the backups nor their runs' ends."""
        queue, verifies = self.queue, dict(self.verifies)
        now = datetime.now().astimezone()
        for name, policy in verifies.items():
            since = self.first_seen.setdefault(name, now)
            slot = due_slot(policy.verify_full_schedule, queue.last_slot(name), since, now,
                            policy_zone(policy))
            if slot is not None and policy_run.enqueue_full_verify(self.ctx, queue, policy, slot):
                log.info("policy %s: full verify for %s queued", policy.name, slot.isoformat())
        for future in [f for f in verifying if f.done()]:
            verifying.discard(future)
            self._run_finished(future)
        if not verifying and not self.stopping.is_set():
            run = queue.take_finished_run(set(verifies))
            if run is not None:
                verifying.add(verifier.submit(_finish_safely, self.ctx, queue, verifies[run.policy], run.id,
                                              policy_run.full_verify))

    def _run_finished(self, future: Future) -> None:
        report = future.result()
        if report["status"] == policy_run.DEFERRED:
            log.info("policy %s: full verify for %s deferred: %s (tried again when its lease ends)",
                     report["policy"], report["slot"], report["error"])
            return
        self.runs_finished += 1
        log.info("policy %s: %s for %s finished: %s", report["policy"],
                 "full verify" if report.get("full_verify") else "run", report["slot"], report["status"])


def _finish_safely(ctx: JobContext, queue: PolicyQueue, policy: Policy, run_id: str,
                   finish: Callable[[JobContext, PolicyQueue, Policy, str], dict] = finish_run) -> dict:
    """`finish` (a run's end, or a full verify), and a run closed as failed when it cannot be (else the
    policy would never run again)."""
    try:
        return finish(ctx, queue, policy, run_id)
    except Exception as exc:  # noqa: BLE001 - any surprise: the run is closed, its job row too, and it is said
        try:
            run = queue.get_run(run_id)
            report = {"policy": policy.name, "run_id": run_id, "slot": run.slot, "status": "failed",
                      "error": f"{exc.__class__.__name__}: {exc}"}
            if run.job_id:
                ctx.catalog.finish_job(run.job_id, "failed", report["error"], report=report)
            queue.complete_run(run_id, report)
        except Exception:
            queue.release_run(run_id)  # the catalog away: the run is finished again after its lease
            raise
        call_hooks(report)
        return report


def serve(settings_loader: Callable[[], Settings], passphrase_file: str | None, connect: Connect,
          poll_s: float = 1.0) -> dict:
    if not logging.getLogger().handlers:  # under systemd, one line per event into the journal
        logging.basicConfig(level=logging.INFO, format="stackvault server: %(message)s")
    return PolicyServer(settings_loader, passphrase_file, connect, poll_s).serve()

