"""Backing up OpenStack servers and volumes: snapshot, read each disk into the engine, clean up.

Each server becomes one backup (one disk per attached disk), done in parallel with the others; one
server failing never fails the others. Whatever the job made in the cloud (snapshot images, Cinder
snapshots, temporary volumes) is removed on every path, and is tagged so that `stackvault cleanup`
finds it after a killed run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..cloud import snapshots as snaps
from ..cloud.consistency import CRASH, expected_consistency, image_changed_after
from ..cloud.definition import server_definition
from ..cloud.inventory import Selection, pick_servers, pick_volumes
from ..cloud.rbd import (
    REFUSED_KEY,
    make_room_for_snapshot,
    rbd_image,
    rbd_snapshot,
    release_bases,
    retain_base,
    server_volume,
    snapshot_id_of,
    volume_placement,
)
from ..cloud.removal import leftovers_warning
from ..cloud.servers import locked_while
from ..cloud.transfer import open_image_source
from ..cloud.volumes import attached_to_proxy, create_temp_volume, delete_volume, upload_to_image
from ..domain import POLICY_TAG, BackupLevel, JobStatus
from ..engine.rbdsource import RbdSource, open_rbd
from ..engine.sources import DiskSource, RawSource
from ..errors import DamagedRecordError, NotFoundError, SourceError, StackvaultError, UsageError
from ..observe.targets import Target
from .backup import BackupRequest, ProgressFactory, back_up, backup_report
from .context import JobContext
from .doctor import policy_refusal
from .quiesce_proof import prove_after_backup

log = logging.getLogger(__name__)

GiB = 1 << 30


@dataclass
class ItemResult:
    kind: str  # server | volume
    id: str
    name: str
    status: str = "failed"
    consistency: str | None = None
    error: str | None = None
    report: dict = field(default_factory=dict)
    backup_began: bool = False  # from then on the backup's own job row records how it ended

    def note_leftovers(self, leftovers: list[str]) -> None:
        """What could not be deleted from the cloud makes a committed backup a warning, never a failure."""
        warning = leftovers_warning(leftovers)
        if warning:
            self.report.setdefault("warnings", []).append(warning)
            if self.status == "success":
                self.status = "warning"

    def to_dict(self) -> dict:
        d = {f"{self.kind}_id": self.id, "name": self.name, "status": self.status, "consistency": self.consistency}
        if self.error:
            d["error"] = self.error
        d.update({k: v for k, v in self.report.items() if k not in ("status", "consistency")})
        return d


class DiskReaders:
    """Turns Cinder snapshots into engine sources through the proxy, and undoes it all on exit."""

    def __init__(self, ctx: JobContext, conn, job_id: str, leftovers: list[str]) -> None:
        self.ctx, self.conn, self.job_id = ctx, conn, job_id
        self.cloud = ctx.settings.cloud
        self.stack = contextlib.ExitStack()
        self.leftovers = leftovers  # what could not be deleted, for the report

    def __enter__(self) -> DiskReaders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def from_volume(self, volume, snapshot_id: str, *, name: str, key: str, meta: dict) -> DiskSource:
        """The volume at its Cinder snapshot: straight from Ceph when Cinder puts it on a backend that
        `[ceph] volume_backends` calls RBD and librbd finds the volume's image and the snapshot's RBD
        snapshot in that pool; else through a temporary volume, as without `[ceph]`. Either way the
        disk key is the volume's, so its earlier backups stay its base and restores find it."""
        backends = self.ctx.settings.ceph.volume_backends
        size_gb = int(volume.size)
        if not backends:  # a proxy without Ceph: reads and reports as it always did
            return self.from_volume_snapshot(snapshot_id, size_gb, name=name, key=key, meta=meta)
        placement = volume_placement(self.conn, volume)
        mapped = [(name, said) for name, said in placement.candidates if name in backends]
        if not mapped:
            known = ", ".join(sorted(backends))
            named = "; ".join(dict.fromkeys(said for _, said in placement.candidates))
            why = (f"{named}: not one of the RBD backends of [ceph] volume_backends ({known})"
                   if placement.candidates else placement.said_by)
            return self.from_volume_snapshot(snapshot_id, size_gb, name=name, key=key, meta=meta, why=why)
        ceph = self.ctx.settings.ceph
        tried = []
        for match, said in mapped:  # the first that librbd opens: two names may map to different pools
            spec = f"{backends[match]}/{rbd_image(volume)}@{rbd_snapshot(snapshot_id)}"
            try:
                source = open_rbd(spec, ceph.conf, ceph.client, ceph.keyring)
            except SourceError as exc:  # Ceph unreachable, no rights, or not where the mapping says
                tried.append(f"Cinder backend {match} is RBD ({said}) but librbd cannot read it: {exc.message}")
                continue
            self.stack.callback(source.close)
            source.key, source.name = key, name
            source.meta = {**meta, **source.meta}
            source.read_note = {"rbd": spec, "backend": f"{match} ({said})"}
            return source
        return self.from_volume_snapshot(snapshot_id, size_gb, name=name, key=key, meta=meta, why="; ".join(tried))

    def from_volume_snapshot(self, snapshot_id: str, size_gb: int, *, name: str, key: str, meta: dict,
                             why: str = "") -> DiskSource:
        """Today's path: a temporary volume from the snapshot, attached to the proxy or uploaded to
        Glance, read whole."""
        source = self._temp_volume_source(snapshot_id, size_gb, name=name, key=key, meta=meta)
        if why:
            source.read_note = {"path": self.cloud.volume_transfer, "why": why}
        return source

    def _temp_volume_source(self, snapshot_id: str, size_gb: int, *, name: str, key: str, meta: dict) -> DiskSource:
        cloud = self.cloud
        vol = create_temp_volume(self.conn, self.job_id, size_gb=size_gb, snapshot_id=snapshot_id,
                                 name=f"stackvault-read-{name}-{self.job_id[:8]}", timeout_s=cloud.timeout)
        self.stack.callback(delete_volume, self.conn, vol.id, cloud.timeout, self.leftovers)
        if cloud.volume_transfer == "image":
            return self._via_image(vol.id, name=name, key=key, meta=meta)
        if not cloud.proxy_server:
            raise UsageError("reading volumes by attaching them needs this proxy's server",
                             "set proxy_server in [cloud], or volume_transfer = \"image\"")
        path = self.stack.enter_context(
            attached_to_proxy(self.conn, vol.id, cloud.proxy_server, cloud.device_root, cloud.timeout))
        source = RawSource(path=path, name=name, key=key, format="raw", meta=meta)
        source.open()
        self.stack.callback(source.close)
        return source

    def _via_image(self, volume_id: str, *, name: str, key: str, meta: dict) -> DiskSource:
        def created(image_id: str) -> None:
            self.stack.callback(snaps.delete_image, self.conn, image_id, self.leftovers)

        image = upload_to_image(self.conn, volume_id, f"stackvault-read-{name}-{self.job_id[:8]}", self.cloud.timeout,
                                created)
        source = open_image_source(self.conn, image, name=name, key=key, tmpdir=self.tmpdir,
                                   retries=self.cloud.retries)
        self.stack.callback(source.close)
        return source

    @property
    def tmpdir(self) -> str:
        return os.path.join(str(self.ctx.settings.workdir), "tmp")


def back_up_server(ctx: JobContext, conn, server, level: BackupLevel, job_id: str,
                   progress: ProgressFactory | None, tags: dict[str, str] | None = None) -> ItemResult:
    """One server's backup; `tags` go into its record beside `server_id` (a policy names itself there,
    so that its retention forgets only its own backups)."""
    result = ItemResult("server", server.id, server.name)
    cloud = ctx.settings.cloud
    leftovers: list[str] = []
    try:
        definition = server_definition(conn, server)
        consistency = expected_consistency(definition.image_properties)
        result.consistency = consistency

        refusal = policy_refusal(definition, consistency, cloud.require_consistency)
        if refusal:
            raise StackvaultError(refusal)
        warnings = [w for w in [image_changed_after(definition)] if w]
        volumes = definition.volumes
        if volumes and ctx.settings.ceph.volume_backends:
            note = make_room_for_snapshot(conn, [v.id for v in volumes], ctx.repo.id)
            warnings += [note] if note else []
        if definition.boot == "volume":
            snaps.check_snapshot_quota(conn, len(volumes), f"server {server.name}")
        lock_notes: list[str] = []  # a lock or unlock Nova refused: the backup's warnings
        with contextlib.ExitStack() as held:
            if cloud.lock_servers:
                held.enter_context(locked_while(conn, server.id, f"stackvault backup {job_id}", lock_notes))
            log.info("server %s (%s): %s consistency expected; snapshot", server.name, server.id, consistency)
            window_start = time.time()  # the freeze hook's marker must be from this snapshot's window
            snap = snaps.snapshot_server(conn, server, job_id, timeout_s=cloud.timeout,
                                         image_ref=definition.image_id or "boot volume")
            window_end = time.time()
            retained: list[str] = []  # snapshots kept as their volumes' next bases: not deleted with the rest
            rbd_read: dict[str, str] = {}  # volume id -> the snapshot of it that was read from RBD
            with contextlib.ExitStack() as stack, DiskReaders(ctx, conn, job_id, leftovers) as readers:
                stack.callback(lambda: snaps.delete_server_snapshot(conn, snap, leftovers, keep=set(retained)))
                sources: list[DiskSource] = []
                by_device = {e.get("device_name"): e for e in snap.volume_snapshots}
                if not snap.volume_backed:
                    root = definition.root_device
                    sources.append(open_image_source(conn, snap.image, name=root, key=f"server:{server.id}:{root}",
                                                     tmpdir=readers.tmpdir, retries=cloud.retries))
                    sources[-1].meta["consistency"] = consistency
                    stack.callback(sources[-1].close)
                    if volumes:
                        snaps.check_snapshot_quota(conn, len(volumes), f"server {server.name}")

                def delete_unless_kept(snapshot_id: str) -> None:
                    if snapshot_id not in retained:
                        snaps.delete_volume_snapshot(conn, snapshot_id, leftovers=leftovers)

                for vol in volumes:
                    entry = by_device.get(vol.device)
                    if entry is None:  # image-backed server: snapshot the attached volume ourselves
                        snapshot_id = snaps.create_volume_snapshot(
                            conn, vol.id, f"stackvault-{server.name}-{job_id[:8]}", job_id)
                        stack.callback(delete_unless_kept, snapshot_id)
                        snaps.wait_snapshot(conn, snapshot_id, cloud.timeout)
                    else:
                        snapshot_id = entry["snapshot_id"]
                    dev = vol.device_name
                    # Nova quiesces only for its own snapshots: a volume that Cinder snapshots afterwards, on
                    # its own, is crash-consistent whatever the root disk is; each disk records its own.
                    meta = {"volume_id": vol.id, "device": vol.device,
                            "consistency": consistency if entry is not None else CRASH}
                    size_gb = int(vol.size_gb or (entry or {}).get("volume_size") or 1)
                    key = f"volume:{vol.id}"
                    if ctx.settings.ceph.volume_backends:
                        # The snapshot (Nova's, quiesced; or stackvault's own) straight from RBD when the volume
                        # is there; then kept as the volume's next base.
                        source = readers.from_volume(server_volume(conn, vol.id, size_gb), snapshot_id, name=dev,
                                                     key=key, meta=meta)
                        if isinstance(source, RbdSource):
                            rbd_read[vol.id] = snapshot_id
                        sources.append(source)
                        continue
                    sources.append(readers.from_volume_snapshot(snapshot_id, size_gb, name=dev, key=key, meta=meta))
                log.info("server %s: reading %d disks", server.name, len(sources))
                result.backup_began = True
                record = back_up(ctx, BackupRequest(
                    sources=sources, level=level, name=server.name, tags={**(tags or {}), "server_id": server.id},
                    source_meta={"kind": "server", "server": definition.to_dict()}, consistency=consistency,
                    warnings=warnings), progress)
                result.report = backup_report(record)
                result.status = record.status
                if ctx.settings.ceph.volume_backends:
                    for vol in volumes:
                        try:
                            keep_base(ctx, conn, vol.id, rbd_read.get(vol.id), result, retained)
                        except Exception as exc:  # noqa: BLE001 - the backup is committed: whatever happens now is a warning
                            result.report.setdefault("warnings", []).append(
                                f"the base snapshots of volume {vol.id} were left as they are: "
                                f"{exc.__class__.__name__}: {exc}")
                            result.status = "warning" if result.status == "success" else result.status
        if lock_notes:
            result.report.setdefault("warnings", []).extend(lock_notes)
            result.status = "warning" if result.status == "success" else result.status
        if cloud.verify_quiesce:
            prove_after_backup(ctx, record, result, (window_start, window_end))
    except StackvaultError as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one server's surprise must not stop the others
        result.error = f"{exc.__class__.__name__}: {exc}"
    if result.error and not result.backup_began:
        record_failure_before_backup(ctx, result.kind, result.id, result.name, result.error, job_id, tags)
    result.note_leftovers(leftovers)
    return result


def back_up_volume(ctx: JobContext, conn, volume, level: BackupLevel, job_id: str,
                   progress: ProgressFactory | None, tags: dict[str, str] | None = None) -> ItemResult:
    """One volume's backup; `tags` as for `back_up_server`."""
    result = ItemResult("volume", volume.id, volume.name or volume.id, consistency=CRASH)
    cloud = ctx.settings.cloud
    leftovers: list[str] = []
    notes: list[str] = []  # warnings from before the backup's report exists
    try:
        note = make_room_for_snapshot(conn, [volume.id], ctx.repo.id)
        if note:
            notes.append(note)
        snaps.check_snapshot_quota(conn, 1, f"volume {volume.name or volume.id}")
        log.info("volume %s (%s): snapshot", volume.name, volume.id)
        snapshot_id = snaps.create_volume_snapshot(
            conn, volume.id, f"stackvault-{volume.name or volume.id}-{job_id[:8]}", job_id)
        retained: list[str] = []  # the snapshot, once it is the volume's base: then it stays
        with contextlib.ExitStack() as stack, DiskReaders(ctx, conn, job_id, leftovers) as readers:
            stack.callback(lambda: retained or snaps.delete_volume_snapshot(conn, snapshot_id, leftovers=leftovers))
            snaps.wait_snapshot(conn, snapshot_id, cloud.timeout)
            source = readers.from_volume(volume, snapshot_id, name=volume.name or volume.id,
                                         key=f"volume:{volume.id}", meta={"volume_id": volume.id})
            result.backup_began = True
            record = back_up(ctx, BackupRequest(
                sources=[source], level=level, name=volume.name or volume.id,
                tags={**(tags or {}), "volume_id": volume.id},
                source_meta={"kind": "volume", "volume": {
                    "id": volume.id, "name": volume.name, "project_id": volume.project_id,
                    "size_gb": volume.size, "volume_type": volume.volume_type,
                    "availability_zone": volume.availability_zone,
                    "bootable": str(volume.is_bootable).lower() == "true", "metadata": dict(volume.metadata or {}),
                    "volume_image_metadata": dict(volume.volume_image_metadata or {})}},
                consistency=CRASH), progress)
            result.report = backup_report(record)
            result.status = record.status
            try:
                read_from_rbd = snapshot_id if isinstance(source, RbdSource) else None
                keep_base(ctx, conn, volume.id, read_from_rbd, result, retained)
            except Exception as exc:  # noqa: BLE001 - the backup is committed: whatever happens now is a warning
                notes.append(f"the volume's base snapshots were left as they are: {exc.__class__.__name__}: {exc}")
    except StackvaultError as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one volume's surprise must not stop the others
        result.error = f"{exc.__class__.__name__}: {exc}"
    if result.error and not result.backup_began:
        record_failure_before_backup(ctx, result.kind, result.id, result.name, result.error, job_id, tags)
    if notes:
        result.report.setdefault("warnings", []).extend(notes)
        result.status = "warning" if result.status == "success" else result.status
    result.note_leftovers(leftovers)
    return result


def record_failure_before_backup(ctx: JobContext, kind: str, item_id: str, name: str, error: str, job_id: str,
                                 tags: dict[str, str] | None) -> None:
    """A failed `backup` job row naming a server or volume whose backup never began (refused under
    require_consistency, Cinder refusing the snapshot, the server gone): the failure metrics and
    `stackvault jobs` read job rows, and a backup that began writes its own."""
    report: dict = {"target": Target(kind, item_id, name).to_dict()}
    if tags and POLICY_TAG in tags:
        report.update({"policy": tags[POLICY_TAG], "run_id": job_id})
    try:
        ctx.catalog.finish_job(ctx.catalog.start_job("backup", ctx.repo.id), "failed", error, report=report)
    except Exception as exc:  # noqa: BLE001 - the failure is in the item's report already; the row is its echo
        log.warning("the failure of %s %s was not recorded in the catalog: %s", kind, item_id, exc)


def bases_in_use(repo, disk_key: str) -> set[str]:
    """The Cinder snapshots the next backups of the disk diff from, as the repository's committed
    backups name them: the newest backup's, and the last Full's while Differentials follow it. Asked
    of the repository, not of this job: another proxy or job may have committed a newer one."""
    keep: set[str] = set()
    newest_seen, differential = False, False
    for backup_id in reversed(repo.backup_ids()):
        try:
            record = repo.get_backup(backup_id)
        except (DamagedRecordError, NotFoundError):
            continue
        disk = next((d for d in record.disks if d.disk_key == disk_key), None)
        if disk is None:
            continue
        snapshot = snapshot_id_of(((disk.meta or {}).get("rbd") or {}).get("snapshot") or "")
        if not newest_seen or (disk.level == "full" and differential):
            keep |= {snapshot} if snapshot else set()
        newest_seen = True
        differential = differential or disk.level == "differential"
        if disk.level == "full":
            break
    return keep


def keep_base(ctx: JobContext, conn, volume_id: str, snapshot_id: str | None, result: ItemResult,
              retained: list[str]) -> None:
    """After the backup committed: keep the snapshot it read from RBD as the volume's next base (None:
    it was read otherwise, and is no base) and delete this repository's bases of the volume that no
    committed backup diffs from any more, whichever way this one was read. A snapshot that cannot be
    kept is deleted as usual, and the next backup reads the volume in full: a warning, never a
    failure of what is committed."""
    warnings: list[str] = []
    if snapshot_id is not None:
        try:
            retain_base(conn, snapshot_id, ctx.repo.id)
            retained.append(snapshot_id)
            if result.kind == "volume":
                result.report["base_snapshot"] = snapshot_id
            else:  # a server has a base per volume
                result.report.setdefault("base_snapshots", {})[volume_id] = snapshot_id
        except StackvaultError as exc:
            warnings.append(str(exc))
    try:
        done = release_bases(conn, volume_id, ctx.repo.id,
                             keep=lambda: bases_in_use(ctx.repo, f"volume:{volume_id}") | set(retained))
    except StackvaultError as exc:  # which backups use which snapshot cannot be read: release none
        warnings.append(f"superseded base snapshots of the volume kept: {exc}")
        done = None
    if done is not None:
        if done.deleted:  # a server's volumes add theirs to one list
            result.report.setdefault("released_bases", []).extend(done.deleted)
        if done.still_refused:
            result.report.setdefault("refused_bases", []).extend(done.still_refused)
        if done.refused:
            warnings.append(
                f"Cinder refused to delete the superseded base snapshot {', '.join(done.refused)} (a volume was "
                f"cloned from it?): it stays, tagged {REFUSED_KEY}, and later backups try again without waiting "
                "long (delete or flatten the clone, or run `stackvault cleanup --bases --volume` once it is gone)")
        if done.failed:
            warnings.append(
                f"superseded base snapshots left in the cloud: {'; '.join(done.failed)} (the next backup of the "
                "volume deletes them, or `stackvault cleanup --bases --volume` does)")
    if warnings:
        result.report.setdefault("warnings", []).extend(warnings)
        result.status = "warning" if result.status == "success" else result.status


def back_up_cloud(ctx: JobContext, conn, selection: Selection, level: BackupLevel,
                  progress: ProgressFactory | None = None) -> dict:
    if selection.empty():
        raise UsageError("nothing selected to back up", "pass --server, --volume, --all or --server-tag")
    picked_servers, picked_volumes = pick_servers(conn, selection), pick_volumes(conn, selection)
    servers, volumes = picked_servers.items, picked_volumes.items
    others = picked_servers.elsewhere + picked_volumes.elsewhere
    if not servers and not volumes and not others:  # an empty share of a split is no error
        raise UsageError("the selection matches no server or volume", "check the names, tags and --exclude")
    job_id = uuid.uuid4().hex
    started = time.monotonic()
    ctx.open_catalog_early()  # while the snapshots are made
    with ThreadPoolExecutor(max(1, ctx.settings.cloud.parallel), thread_name_prefix="sv-server") as pool:
        futures = [pool.submit(back_up_server, ctx, conn, s, level, job_id, progress) for s in servers]
        futures += [pool.submit(back_up_volume, ctx, conn, v, level, job_id, progress) for v in volumes]
        results = [f.result() for f in futures]
    items = [r.to_dict() for r in results]
    report = {
        "job_id": job_id, "status": overall_status(items), "duration_s": round(time.monotonic() - started, 3),
        "servers": [i for i, r in zip(items, results, strict=True) if r.kind == "server"],
        "volumes": [i for i, r in zip(items, results, strict=True) if r.kind == "volume"],
    }
    if selection.scope():  # several proxies split the work: say which share this one took
        report["scope"] = {**selection.scope(), "servers_skipped": picked_servers.elsewhere,
                           "volumes_skipped": picked_volumes.elsewhere}
    return report


def overall_status(items: list[dict]) -> JobStatus:
    """One word for a job of several servers: any failure makes it partial, all of them failed."""
    statuses = {i["status"] for i in items}
    if statuses == {JobStatus.FAILED}:
        return JobStatus.FAILED
    if JobStatus.FAILED in statuses:
        return JobStatus.PARTIAL
    return JobStatus.WARNING if JobStatus.WARNING in statuses else JobStatus.SUCCESS


def back_up_jobs(ctx: JobContext, jobs: list, level: BackupLevel, connect,
                 progress: ProgressFactory | None = None) -> dict:
    """Several `[[jobs]]` (clouds, projects) one after the other, as one report; each item names its job."""
    started = time.monotonic()
    reports = []
    for job in jobs:
        azs, shard = ctx.settings.share(job)
        selection = Selection(servers=job.servers, volumes=job.volumes, all_servers=job.all, tags=job.server_tags,
                              metadata=job.server_metadata, exclude=job.exclude, project=job.project,
                              availability_zones=azs, shard=shard)
        try:
            report = back_up_cloud(ctx, connect(job.os_cloud or ctx.settings.cloud.os_cloud), selection, level,
                                   progress)
        except StackvaultError as exc:  # this job's cloud is unreachable or its selection wrong: the others go on
            report = {"job_id": None, "servers": [], "volumes": [],
                      "error": {"name": job.name, "status": "failed", "error": str(exc)}}
        for item in report["servers"] + report["volumes"]:
            item["job"] = job.name
        if "scope" in report:
            report["scope"]["job"] = job.name
        reports.append((job.name, report))
    items = [i for _, r in reports for i in r["servers"] + r["volumes"]]
    errors = [r["error"] for _, r in reports if "error" in r]
    return {
        "job_id": ",".join(r["job_id"] for _, r in reports if r["job_id"]),
        "status": overall_status(items + errors), "duration_s": round(time.monotonic() - started, 3),
        "servers": [i for _, r in reports for i in r["servers"]],
        "volumes": [i for _, r in reports for i in r["volumes"]],
        "job_errors": errors,
        "scopes": [r["scope"] for _, r in reports if "scope" in r],
    }
