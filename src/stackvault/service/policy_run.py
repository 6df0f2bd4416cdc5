"""One policy run, with the job functions the CLI's backup, prune, gc, verify and state commands call.

A run is queued once (`enqueue`: the level from the plan, the selection's servers and volumes as
items, a `policy` job row in the catalog), its items are backed up by whichever workers claim them
(`work_item`, on any proxy), and the worker that sees its last item done finishes it (`finish_run`):
the policy's retention, gc when anything was forgotten, the sampled deep verify, and the job row
with every item. `run_policy` does all three in this process for `stackvault run-policy`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..catalog.policies import StoredPolicies
from ..catalog.queue import FINISHING, Claim, PolicyQueue, QueueItem
from ..cloud.inventory import Selection, pick_servers, pick_volumes
from ..cloud.servers import get_server
from ..cloud.volumes import get_volume
from ..config import PROXY_STATE_POLICY, Policy
from ..domain import POLICY_TAG
from ..engine.manifest import BackupRecord
from ..engine.repository import hostname
from ..errors import LockedError, StackvaultError, UsageError
from ..jobs.cloud_backup import back_up_server, back_up_volume, overall_status, record_failure_before_backup
from ..jobs.context import JobContext
from ..jobs.copy import copy as copy_backups
from ..jobs.copy import second_site
from ..jobs.gc import gc
from ..jobs.proxy_state import backup_state
from ..jobs.prune import prune
from ..jobs.verify import verify
from .policies import policies_in_force
from .schedule import plan_level, policy_zone, verify_part

#: Called with each finished run's report (metrics and notifications subscribe here); a hook that
#: raises is the hook's fault and never changes the run.
run_finished_hooks: list[Callable[[dict], None]] = []

#: The tag naming the policy a backup was made by: a policy's retention forgets only its own backups,
#: never another policy's (a monthly archive of the same server) nor one made by hand.

Connect = Callable[[str | None], Any]  # cloud.connection.connect: an openstacksdk Connection

#: Appended to a policy's name for the queue runs of its `verify_full_schedule`.
FULL_VERIFY_SUFFIX = "/full-verify"


def queue_name(policy: Policy) -> str:
    """The policy's name in the queue: the built-in one is each proxy's own (its state is its own)."""
    return f"{PROXY_STATE_POLICY}@{hostname()}" if policy.builtin else policy.name


#: A full verify that found the repository locked (a gc or prune of a run holds it): not done, and its
#: run is taken again once its lease ends, so a weekly verify is not lost to a minute's gc.
DEFERRED = "deferred"


def full_verify_name(policy: Policy) -> str:
    """The queue name of the policy's full deep verify: its slots are counted apart from its backups'."""
    return f"{policy.name}{FULL_VERIFY_SUFFIX}"


def find_policy(ctx: JobContext, name: str) -> Policy:
    """A policy in force by name: the config's, or one written through the API into the catalog."""
    found = policies_in_force(ctx.settings, StoredPolicies(ctx.catalog, ctx.repo.id))
    policy = found.policies.get(name)
    if policy is not None:
        return policy
    if name in found.left_out:
        raise UsageError(f"policy {name!r} in the catalog is not in force: {found.left_out[name]}",
                         f"replace it with PUT /v1/policies/{name}, or delete it")
    if not found.stored:
        raise UsageError(f"no policy {name!r} in the config",
                         f"the config has: {', '.join(sorted(ctx.settings.policies))}")
    raise UsageError(f"no policy {name!r} in the config or the catalog",
                     f"the config has: {', '.join(sorted(ctx.settings.policies))}; "
                     f"the catalog: {', '.join(sorted(found.stored))}")


def enqueue(ctx: JobContext, queue: PolicyQueue, policy: Policy, slot: datetime, connect: Connect) -> str | None:
    """Queue the run of `policy` for `slot`; None when it has an unfinished run or another proxy queued it."""
    name = queue_name(policy)
    if queue.unfinished_run(name) is not None:
        return None
    level = plan_level(policy, slot, queue.last_full(name))
    items: list[QueueItem] = []
    error = None
    if not policy.builtin:
        try:
            items = select_items(ctx, policy, connect)
        except StackvaultError as exc:  # the run is recorded as failed, and the next slot tries again
            error = str(exc)
    run_id = queue.open_run(name, slot, level, items)
    if run_id is None:
        return None
    job_id = ctx.catalog.start_job("policy", ctx.repo.id)
    queue.set_job(run_id, job_id, {"error": error} if error else {})
    return run_id


def policy_selection(policy: Policy) -> Selection:
    """What the policy selects, as `pick_servers`/`pick_volumes` (and the API's `selects`) read it."""
    return Selection(servers=policy.servers, volumes=policy.volumes, all_servers=policy.all,
                     tags=policy.server_tags, metadata=policy.server_metadata, exclude=policy.exclude,
                     project=policy.project, availability_zones=list(policy.availability_zones))


def select_items(ctx: JobContext, policy: Policy, connect: Connect) -> list[QueueItem]:
    """The servers and volumes the policy selects, in every zone it names: which proxy takes each is
    decided when it is claimed (by the claiming proxy's zones), not here."""
    selection = policy_selection(policy)
    conn = connect(policy.os_cloud or ctx.settings.cloud.os_cloud)
    servers, volumes = pick_servers(conn, selection).items, pick_volumes(conn, selection).items
    return ([QueueItem("server", s.id, s.name or s.id, getattr(s, "availability_zone", None)) for s in servers]
            + [QueueItem("volume", v.id, v.name or v.id, getattr(v, "availability_zone", None)) for v in volumes])


def work_item(ctx: JobContext, queue: PolicyQueue, policy: Policy, claim: Claim, connect: Connect) -> dict:
    """Back up one claimed item as `backup --server/--volume` does, under the policy's consistency rule."""
    cloud = ctx.settings.cloud
    if policy.require_consistency:
        cloud = dataclasses.replace(cloud, require_consistency=policy.require_consistency)
    job_ctx = copy.copy(ctx)  # the opened repository, catalog and state, with the policy's settings
    job_ctx.settings = dataclasses.replace(ctx.settings, cloud=cloud)
    item = claim.item
    try:
        conn = connect(policy.os_cloud or cloud.os_cloud)
        if item.kind == "server":
            server = get_server(conn, item.item_id)
            result = back_up_server(job_ctx, conn, server, claim.level, claim.run_id, None, {POLICY_TAG: policy.name})
        else:
            volume = get_volume(conn, item.item_id)
            result = back_up_volume(job_ctx, conn, volume, claim.level, claim.run_id, None, {POLICY_TAG: policy.name})
        report = result.to_dict()
    except Exception as exc:  # noqa: BLE001 - gone since it was queued, cloud unreachable: this item fails, not the run
        report = {f"{item.kind}_id": item.item_id, "name": item.name, "status": "failed",
                  "error": exc.message if isinstance(exc, StackvaultError) else f"{exc.__class__.__name__}: {exc}"}
        queue.finish(claim, report["status"], report)
        record_failure_before_backup(ctx, item.kind, item.item_id, item.name, report["error"], claim.run_id,
                                     {POLICY_TAG: policy.name})
        return report
    queue.finish(claim, report["status"], report)
    return report


def finish_run(ctx: JobContext, queue: PolicyQueue, policy: Policy, run_id: str) -> dict:
    """After the run's last item: retention, gc, the sampled verify, then the job row with every item."""
    run = queue.get_run(run_id)
    items = [i.report or {f"{i.kind}_id": i.item_id, "name": i.name, "status": i.result or "failed"}
             for i in queue.items(run_id)]
    report: dict = {"policy": policy.name, "run_id": run.id, "slot": run.slot, "level": run.level,
                    "servers": [i for i in items if "server_id" in i],
                    "volumes": [i for i in items if "volume_id" in i]}
    problems: list[dict] = [{"status": "failed"}] if run.report.get("error") else []
    if run.report.get("error"):
        report["error"] = run.report["error"]
    steps = [("state", lambda: backup_state(ctx))] if policy.builtin else _maintenance(ctx, queue, policy, run_id)
    for step, job in steps:
        try:
            done = job()
            if done is None:
                continue
            report[step] = done
            if step == "verify" and not done["ok"]:
                problems.append({"status": "failed"})
        except StackvaultError as exc:  # a held lock, a damaged repository: said, and the next run tries again
            report[step] = {"status": "failed", "error": str(exc)}
            problems.append({"status": "warning"})
    report["status"] = overall_status(items + problems) if items or problems else "success"
    message = report.get("error") or "; ".join(f"{s}: {report[s]['error']}" for s in ("state", "prune", "gc", "verify",
                                                                                     "copy")
                                               if isinstance(report.get(s), dict) and report[s].get("error"))
    if run.job_id:
        ctx.catalog.finish_job(run.job_id, report["status"], message, report=report)
    queue.complete_run(run_id, report)
    call_hooks(report)
    return report


def enqueue_full_verify(ctx: JobContext, queue: PolicyQueue, policy: Policy, slot: datetime) -> str | None:
    """Queue the policy's full deep verify for `slot`: a run without items, so that the slot rules of
    every run hold (one per slot, a missed slot caught up once, never two at once on any proxy), with
    its `policy` job row as a run of backups has."""
    run_id = queue.open_run(full_verify_name(policy), slot, "full", [])
    if run_id is not None:
        queue.set_job(run_id, ctx.catalog.start_job("policy", ctx.repo.id), {})
    return run_id


def full_verify(ctx: JobContext, queue: PolicyQueue, policy: Policy, run_id: str) -> dict:
    """Deep-verify every chunk of the repository. `verify` records it as a `verify` job (which the
    verify metrics read); the run's `policy` job row holds the same result under the policy's name."""
    run = queue.get_run(run_id)
    report: dict = {"policy": policy.name, "run_id": run.id, "slot": run.slot, "level": run.level,
                    "full_verify": True, "servers": [], "volumes": []}
    try:
        report["verify"] = verify(ctx, deep=True).to_dict()
        report["status"] = report["verify"]["status"]
    except LockedError as exc:  # a gc or prune holds the repository: this slot's verify is tried again later
        queue.release_run(run_id)
        return {**report, "status": DEFERRED, "error": str(exc)}
    except StackvaultError as exc:  # an unreadable repository: said, and the next slot tries again
        report["verify"] = {"status": "failed", "error": str(exc)}
        report["status"], report["error"] = "failed", f"verify: {exc}"
    if run.job_id:
        message = report.get("error") or ("" if report["verify"]["ok"] else "full verify found damage")
        ctx.catalog.finish_job(run.job_id, report["status"], message, report=report)
    queue.complete_run(run_id, report)
    call_hooks(report)
    return report


def _abandoned(ctx: JobContext, job_id: str | None) -> bool:
    """Whether the job recording a run was left by a proxy that stopped: its lease ended (a run-policy
    killed by a reboot or Ctrl-C). Its items' own leases then end too, so claiming them is safe."""
    if job_id is None:
        return False
    ctx.catalog.reap_jobs(ctx.repo.id)
    return ctx.catalog.job_status(job_id) == "interrupted"


def call_hooks(report: dict) -> None:
    """Tell `run_finished_hooks` of a finished run."""
    for hook in run_finished_hooks:
        try:
            hook(report)
        except Exception:  # noqa: BLE001 - see run_finished_hooks
            pass


def _maintenance(ctx: JobContext, queue: PolicyQueue, policy: Policy,
                 run_id: str) -> list[tuple[str, Callable[[], dict | None]]]:
    """The policy's prune (of its own servers' and volumes' backups), gc after a prune that forgot
    anything, and its share of the deep verify, each as the CLI command runs it."""
    ids = {i.item_id for i in queue.items(run_id)}
    pruned: dict = {}

    def prune_step() -> dict | None:
        if not policy.retention.any() or not ids:
            return None
        pruned.update(prune(ctx, policy.retention, only=lambda record: _item_of(record) in ids
                            and (record.tags or {}).get(POLICY_TAG) == policy.name))
        return {"removed": pruned["removed"], "kept": len(pruned["kept"])}

    def gc_step() -> dict | None:
        return gc(ctx) if policy.gc and pruned.get("removed") else None

    def verify_step() -> dict | None:
        if not policy.verify_sample_percent:
            return None
        runs = [r for r in queue.runs(queue_name(policy)) if r.id != run_id]
        return verify(ctx, deep=True, sample=verify_part(len(runs), policy.verify_sample_percent)).to_dict()

    def copy_step() -> dict | None:
        """Every backup of this policy the second repository lacks (this run's, and any an earlier
        run could not copy), after the prune: what it forgot is not sent."""
        if not policy.copy_to:
            return None
        target = second_site(ctx, policy.copy_to, policy.copy_to_passphrase_file or None, "copy_to_passphrase_file")
        done = copy_backups(ctx, target, only=lambda record: (record.tags or {}).get(POLICY_TAG) == policy.name)
        if done["warnings"]:
            raise StackvaultError(f"copy to {policy.copy_to}: " + "; ".join(done["warnings"]))
        return {k: done[k] for k in ("to", "backups_copied", "backups_skipped", "chunks_sent", "bytes_sent")}

    return [("prune", prune_step), ("gc", gc_step), ("verify", verify_step), ("copy", copy_step)]


def _item_of(record: BackupRecord) -> str | None:
    """The server or volume a backup is of, from its record."""
    source = record.source or {}
    return ((source.get("server") or source.get("volume") or {}).get("id"))


def run_policy(ctx: JobContext, name: str, connect: Connect, now: datetime | None = None,
               poll_s: float = 1.0) -> dict:
    """`stackvault run-policy NAME`: queue a run now, take its items (other proxies may help), finish it."""
    policy = find_policy(ctx, name)
    queue = PolicyQueue(ctx.catalog, ctx.repo.id)
    slot = (now or datetime.now(policy_zone(policy))).replace(microsecond=0)
    run_id = enqueue(ctx, queue, policy, slot, connect)
    if run_id is None:
        running = queue.unfinished_run(queue_name(policy))
        if running is None or not _abandoned(ctx, running.job_id):
            raise LockedError(f"policy {name} is already running"
                              + (f" (run {running.id} for {running.slot})" if running else ""),
                              "wait for it to finish, or see `stackvault server`'s log")
        run_id = running.id  # the proxy that queued it stopped (a killed run-policy): this one finishes it
    zones, _ = ctx.settings.share()
    names = {queue_name(policy)}
    while True:
        claim = queue.claim(names, zones, run_id)
        if claim is not None:
            work_item(ctx, queue, policy, claim, connect)
            continue
        if queue.take_finished_run(names, run_id) is not None:
            return finish_run(ctx, queue, policy, run_id)
        run = queue.get_run(run_id)
        if run.status not in ("queued", FINISHING):
            return run.report  # another proxy finished it
        if queue.fail_unserved(queue_name(policy), policy.unserved_zone_wait):
            continue  # items of a zone no proxy serves are failed: the run may finish now
        time.sleep(poll_s)  # other proxies' items, or items of zones that are not this proxy's
