"""The policy queue: due runs and their items, claimed by the workers of every proxy sharing the catalog.

Only the database's own primitives: a unique (repository, policy, slot) makes one run of a slot however
many proxies find it due; on PostgreSQL a worker claims an item with `SELECT ... FOR UPDATE SKIP
LOCKED`, so two workers never take the same one and none waits for another's; on SQLite (one proxy)
the claiming transaction holds the write lock. A claim carries a lease renewed while the item runs,
as a running job row's (`leases`): when a killed proxy's lease ends, its item is claimed again, and a
run it was finishing is finished by another.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..domain import BackupLevel
from ..engine.repository import hostname
from . import leases
from .models import JobRow, PolicyItemRow, PolicyRunRow
from .store import Catalog

QUEUED, CLAIMED, DONE = "queued", "claimed", "done"
FINISHING = "finishing"
#: Claims of one item whose holders all stopped without finishing it: after that many, the item is a
#: failure of its run rather than claimed again (a disk whose backup kills the proxy must not take
#: every proxy down in turn, nor keep its run, and so its policy, open forever).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class QueueItem:
    """What a run is made of: one server or volume, with the zone that decides which proxy takes it."""

    kind: str  # server | volume
    item_id: str
    name: str
    availability_zone: str | None = None


@dataclass(frozen=True)
class Claim:
    """An item a worker of this process holds (its lease renewed until `finish`)."""

    id: int
    run_id: str
    policy: str
    level: BackupLevel
    item: QueueItem


class PolicyQueue:
    def __init__(self, catalog: Catalog, repo_id: str) -> None:
        self.catalog, self.repo_id = catalog, repo_id
        self._heartbeat = leases.Heartbeat(self._renew)
        self._finishing = leases.Heartbeat(self._renew_runs)

    # -- runs ------------------------------------------------------------------------------------
    def open_run(self, policy: str, slot: datetime, level: str, items: list[QueueItem],
                 job_id: str | None = None) -> str | None:
        """A new queued run of `policy` for `slot`, or None when the policy has an unfinished run or
        another proxy made this slot's run first: a policy never runs twice at once."""
        run_id = uuid.uuid4().hex
        try:
            with self.catalog.session() as s, s.begin():
                if self._unfinished(s, policy) is not None:
                    return None
                s.add(PolicyRunRow(id=run_id, repo_id=self.repo_id, policy=policy, slot=slot.isoformat(),
                                   level=level, status=QUEUED, created=_now(), job_id=job_id, report={}))
                s.flush()
                s.add_all(PolicyItemRow(run_id=run_id, kind=i.kind, item_id=i.item_id, name=i.name,
                                        availability_zone=i.availability_zone, status=QUEUED, attempts=0, report={})
                          for i in items)
        except IntegrityError:
            return None
        return run_id

    def set_job(self, run_id: str, job_id: str, report: dict) -> None:
        """The catalog job that records the run, and what was known when it was queued (an error)."""
        with self.catalog.session() as s, s.begin():
            s.execute(update(PolicyRunRow).where(PolicyRunRow.id == run_id).values(job_id=job_id, report=report))

    def unfinished_run(self, policy: str) -> PolicyRunRow | None:
        with self.catalog.session() as s:
            return self._unfinished(s, policy)

    def _unfinished(self, s, policy: str) -> PolicyRunRow | None:
        return s.scalars(select(PolicyRunRow).where(PolicyRunRow.repo_id == self.repo_id,
                                                    PolicyRunRow.policy == policy,
                                                    PolicyRunRow.status != DONE)).first()

    def runs(self, policy: str) -> list[PolicyRunRow]:
        """The policy's runs, oldest first."""
        with self.catalog.session() as s:
            return list(s.scalars(select(PolicyRunRow).where(PolicyRunRow.repo_id == self.repo_id,
                                                             PolicyRunRow.policy == policy)
                                  .order_by(PolicyRunRow.slot)))

    def last_slot(self, policy: str) -> datetime | None:
        """The slot of the policy's newest run: one row read through an index, as the server asks it of
        every policy at every poll. Newest by creation, not by the slot's text, whose UTC offset
        changes with summer time."""
        mine = (PolicyRunRow.repo_id == self.repo_id) & (PolicyRunRow.policy == policy)
        newest = select(func.max(PolicyRunRow.created)).where(mine).scalar_subquery()
        with self.catalog.session() as s:  # the runs of the newest second: one, but for a run done at once
            slots = s.scalars(select(PolicyRunRow.slot).where(mine, PolicyRunRow.created == newest)).all()
        return max(map(datetime.fromisoformat, slots)) if slots else None

    def last_full(self, policy: str) -> datetime | None:
        """The slot of the policy's newest run at level full that did not fail outright (an unfinished
        one counts: it is planned), so that a failed Full is followed by another."""
        fulls = [r for r in self.runs(policy) if r.level == "full" and r.report.get("status") != "failed"]
        return datetime.fromisoformat(fulls[-1].slot) if fulls else None

    def get_run(self, run_id: str) -> PolicyRunRow:
        with self.catalog.session() as s:
            row = s.get(PolicyRunRow, run_id)
            assert row is not None, run_id
            return row

    def items(self, run_id: str) -> list[PolicyItemRow]:
        with self.catalog.session() as s:
            return list(s.scalars(select(PolicyItemRow).where(PolicyItemRow.run_id == run_id)
                                  .order_by(PolicyItemRow.id)))

    def take_finished_run(self, policies: set[str], run_id: str | None = None) -> PolicyRunRow | None:
        """A run of `policies` whose items are all done, now `finishing` under this process's lease and
        its to finish (prune, gc, verify, its job row): a queued one, or one whose finisher was killed.
        The change is conditional on what was read, so exactly one proxy gets each."""
        now = time.time()
        open_items = select(PolicyItemRow.id).where(PolicyItemRow.run_id == PolicyRunRow.id,
                                                    PolicyItemRow.status != DONE).exists()
        q = select(PolicyRunRow).where(PolicyRunRow.repo_id == self.repo_id, PolicyRunRow.policy.in_(policies),
                                       or_(PolicyRunRow.status == QUEUED,
                                           (PolicyRunRow.status == FINISHING) & (PolicyRunRow.lease_expires < now)),
                                       ~open_items)
        if run_id is not None:
            q = q.where(PolicyRunRow.id == run_id)
        with self.catalog.session() as s, s.begin():
            for row in s.scalars(q.order_by(PolicyRunRow.created)):
                if row.status == FINISHING and not leases.stopped(row, now):
                    continue
                held = PolicyRunRow.lease_expires.is_(None) if row.lease_expires is None \
                    else PolicyRunRow.lease_expires == row.lease_expires
                done = s.execute(update(PolicyRunRow).where(PolicyRunRow.id == row.id,
                                                            PolicyRunRow.status == row.status, held)
                                 .values(status=FINISHING, host=hostname(), pid=os.getpid(),
                                         heartbeat=leases.iso(now), lease_expires=now + leases.lease_s()))
                if done.rowcount == 1:  # type: ignore[attr-defined]  # a CursorResult
                    self._finishing.add(row.id)
                    row.status = FINISHING
                    return row
        return None

    def release_run(self, run_id: str) -> None:
        """Stop renewing the lease of a run this process could not finish (its catalog away a moment):
        when the lease ends, the run is taken again, by another proxy or this one."""
        self._finishing.discard(run_id)

    def complete_run(self, run_id: str, report: dict) -> None:
        self._finishing.discard(run_id)
        with self.catalog.session() as s, s.begin():
            s.execute(update(PolicyRunRow).where(PolicyRunRow.id == run_id)
                      .values(status=DONE, finished=_now(), report=report, lease_expires=None))

    # -- items -----------------------------------------------------------------------------------
    def claim(self, policies: set[str], availability_zones: list[str], run_id: str | None = None) -> Claim | None:
        """The next item of a queued run of `policies` in this proxy's zones (every zone when empty):
        a queued one, or one whose claimer's lease ended. None when there is none to take."""
        now = time.time()
        q = (select(PolicyItemRow, PolicyRunRow)
             .join(PolicyRunRow, PolicyRunRow.id == PolicyItemRow.run_id)
             .where(PolicyRunRow.repo_id == self.repo_id, PolicyRunRow.status == QUEUED,
                    PolicyRunRow.policy.in_(policies),
                    or_(PolicyItemRow.status == QUEUED,
                        (PolicyItemRow.status == CLAIMED) & (PolicyItemRow.lease_expires < now)))
             .order_by(PolicyItemRow.id).limit(8)
             .with_for_update(skip_locked=True, of=PolicyItemRow))
        if availability_zones:  # an item whose zone the cloud did not show is any proxy's (else its run hangs)
            q = q.where(or_(PolicyItemRow.availability_zone.in_(availability_zones),
                            PolicyItemRow.availability_zone.is_(None)))
        if run_id is not None:
            q = q.where(PolicyItemRow.run_id == run_id)
        with self.catalog.session() as s, s.begin():
            for item, run in s.execute(q).all():
                if item.status == CLAIMED and not leases.stopped(item, now):
                    continue  # a lease ended, but its holder on this host is alive: it renews soon
                if item.status == CLAIMED and item.attempts >= MAX_ATTEMPTS:
                    item.status, item.result, item.lease_expires = DONE, "failed", None
                    item.report = {f"{item.kind}_id": item.item_id, "name": item.name, "status": "failed",
                                   "error": f"the proxy backing it up stopped without finishing, {item.attempts} "
                                            "times (see the proxies' logs; the next run tries again)"}
                    continue
                leases.stamp(item, now)
                item.status, item.attempts = CLAIMED, item.attempts + 1
                self._heartbeat.add(str(item.id))
                return Claim(item.id, run.id, run.policy, BackupLevel(run.level),
                             QueueItem(item.kind, item.item_id, item.name, item.availability_zone))
        return None

    def finish(self, claim: Claim, result: str, report: dict) -> None:
        """The item done. Its lease is no longer renewed first: when the end cannot be written (the
        database away a moment), the lease ends and the item goes back to the queue for any proxy's
        worker, this process's included (a lease that ended is not alive, whatever its pid)."""
        self._heartbeat.discard(str(claim.id))
        with self.catalog.session() as s, s.begin():
            s.execute(update(PolicyItemRow).where(PolicyItemRow.id == claim.id)
                      .values(status=DONE, result=result, report=report, lease_expires=None))

    def fail_unserved(self, policy: str, wait_s: float) -> list[str]:
        """Ends, as failed, the items of the policy's runs queued more than `wait_s` ago in an availability
        zone of which no item of their run was ever claimed: no proxy serves that zone, and without this
        the run, and so the policy, would stay open for ever. Returns the zones so ended."""
        cutoff = datetime.fromtimestamp(time.time() - wait_s, UTC).isoformat(timespec="seconds")
        ended: set[str] = set()
        with self.catalog.session() as s, s.begin():
            runs = s.scalars(select(PolicyRunRow.id).where(PolicyRunRow.repo_id == self.repo_id,
                                                           PolicyRunRow.policy == policy, PolicyRunRow.status == QUEUED,
                                                           PolicyRunRow.created < cutoff)).all()
            for run_id in runs:
                items = s.scalars(select(PolicyItemRow).where(PolicyItemRow.run_id == run_id)).all()
                taken = {i.availability_zone for i in items if i.attempts or i.status != QUEUED}
                for item in items:
                    zone = item.availability_zone
                    if zone is None or zone in taken:
                        continue
                    error = (f"no proxy took it in {wait_s:g} s: none serves availability zone {zone} (add {zone} "
                             "to a proxy's [cloud] availability_zones, or drop it from the policy's "
                             "availability_zones)")
                    report = {f"{item.kind}_id": item.item_id, "name": item.name, "status": "failed", "error": error}
                    done = s.execute(update(PolicyItemRow).where(  # unless a proxy claimed it meanwhile
                        PolicyItemRow.id == item.id, PolicyItemRow.status == QUEUED, PolicyItemRow.attempts == 0)
                        .values(status=DONE, result="failed", report=report))
                    if done.rowcount:  # type: ignore[attr-defined]  # a CursorResult
                        ended.add(zone)
        return sorted(ended)

    def end_runs(self, policies: list[str], why: str) -> list[str]:
        """End, as failed, the unfinished runs of `policies` (their queued items and their job rows):
        a policy deleted during a run would otherwise keep it open for ever, since only the policies
        in force are claimed and finished, and a new policy of that name could never start a run.
        An item being backed up finishes on its own. Returns the ids of the runs ended."""
        ended = []
        with self.catalog.session() as s, s.begin():
            runs = s.scalars(select(PolicyRunRow).where(PolicyRunRow.repo_id == self.repo_id,
                                                        PolicyRunRow.policy.in_(policies),
                                                        PolicyRunRow.status != DONE)).all()
            for run in runs:
                for item in s.scalars(select(PolicyItemRow).where(PolicyItemRow.run_id == run.id,
                                                                  PolicyItemRow.status == QUEUED)):
                    item.status, item.result = DONE, "failed"
                    item.report = {f"{item.kind}_id": item.item_id, "name": item.name, "status": "failed",
                                   "error": why}
                run.status, run.finished, run.lease_expires = DONE, _now(), None
                run.report = {**(run.report or {}), "error": why}
                job = s.get(JobRow, run.job_id) if run.job_id else None
                if job is not None and job.status == "running":
                    job.finished, job.status, job.message = _now(), "failed", why
                ended.append(run.id)
        return ended

    def depth(self) -> int:
        """Items waiting in queued runs (for the server's log, and for metrics)."""
        with self.catalog.session() as s:
            return s.scalar(select(func.count()).select_from(PolicyItemRow)
                            .join(PolicyRunRow, PolicyRunRow.id == PolicyItemRow.run_id)
                            .where(PolicyRunRow.repo_id == self.repo_id, PolicyItemRow.status == QUEUED)) or 0

    def _renew_runs(self, run_ids: set[str], now: float) -> None:
        with self.catalog.session() as s, s.begin():
            s.execute(update(PolicyRunRow).where(PolicyRunRow.id.in_(run_ids), PolicyRunRow.status == FINISHING)
                      .values(heartbeat=leases.iso(now), lease_expires=now + leases.lease_s()))

    def _renew(self, item_ids: set[str], now: float) -> None:
        with self.catalog.session() as s, s.begin():
            s.execute(update(PolicyItemRow).where(PolicyItemRow.id.in_([int(i) for i in item_ids]),
                                                  PolicyItemRow.status == CLAIMED)
                      .values(heartbeat=leases.iso(now), lease_expires=now + leases.lease_s()))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
