"""Proof of quiesce: read the freeze hook's marker from the backed-up root disk itself.

Nova does not say whether a guest really froze for a snapshot. The hook of `stackvault guest-hook`
writes `/.stackvault-quiesce` (state, guest time, random nonce) just before qemu-ga freezes the file
systems, and the freeze flushes it, so a snapshot of a frozen guest holds a marker written within
the snapshot's window. After a backup is committed we restore its root disk to a sparse temporary
file with the engine, find the file system from the partition table (MBR or GPT, parsed here from
the first block of the backup, so a disk without ext2/3/4 costs one block read), and read the
marker with `debugfs` (no mounting, no journal replay: a frozen file system has its journal
checkpointed, so what debugfs sees is exactly what the freeze left).

The disk is the tenant's, so its partition table is parsed within fixed bounds (a few hundred KiB
read, whatever the table claims) and debugfs runs as a constrained child (engine.child: limits, a
capped output, a timeout, no network when the proxy may take it away): a crafted disk gives the
result `unreadable` with why, never a failed or slowed backup.

The backup record is already committed and immutable, so the proof is stored beside it, as the
repository object `proofs/<backup id>.json` (`Repository.proofs`, engine/proofs.py), and the catalog
row's consistency is upgraded to `application (verified)`; see docs/consistency.md for why.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..cloud.consistency import CRASH
from ..cloud.guest_hook import MARKER_PATH, QuiesceMarker, parse_marker
from ..engine import child
from ..engine.blockindex import ZERO_DIGEST, BlockIndex
from ..engine.manifest import BackupRecord, DiskRecord
from ..engine.repository import Repository
from ..engine.restore import FileTarget, restore_disk
from ..errors import StackvaultError
from .context import JobContext

VERIFIED = "application (verified)"
CLOCK_SKEW_S = 120  # guest clock vs proxy clock; a stale marker is hours (one backup interval) old
EXT_MAGIC_OFFSET = 1024 + 0x38
GPT_LINUX_TYPES = {"0fc63daf-8483-4772-8e79-3d69d8477de4",  # Linux filesystem data
                   "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",  # x86-64 root
                   "44479540-f297-41b2-9af7-d131d5f0458a"}  # x86 root
MBR_LINUX_TYPES = {0x83}
GPT_MAX_ENTRIES = 256  # what the proof looks at; tables hold 128 entries
GPT_ENTRY_SIZES = (128, 256, 512, 1024, 2048, 4096)  # 128 * 2**n (UEFI), up to a sector of 4 KiB
#: debugfs reading the marker: the marker is a few lines, so its output is capped far below what a
#: crafted (sparse, huge) marker file would print.
DEBUGFS = child.Limits(memory=child.GiB, cpu_s=60, output=64 << 10, timeout_s=120.0)
Reader = Callable[[int, int], bytes]  # (offset, length) -> bytes of the disk


class UnreadableDisk(Exception):
    """The tenant's disk holds a partition table the proof does not believe."""


@dataclass
class Partition:
    start: int  # bytes from the start of the disk
    size: int
    kind: str  # what the table says: "83", a GPT type GUID, or "whole disk"


def read_range(repo: Repository, index: BlockIndex, offset: int, length: int) -> bytes:
    """Bytes of a backed-up disk without restoring it: only the blocks that hold them are fetched."""
    out = bytearray()
    end = min(offset + length, index.disk_size)
    bs = index.block_size
    pos = offset
    while pos < end:
        i = pos // bs
        digest = index.digest(i)
        block_len = index.block_length(i)
        block = bytes(block_len) if digest == ZERO_DIGEST else repo.load_block(digest, block_len)
        take = min(end, i * bs + block_len) - pos
        out += block[pos - i * bs : pos - i * bs + take]
        pos += take
    return bytes(out)


def _guid(raw: bytes) -> str:
    a, b, c = struct.unpack_from("<IHH", raw)
    return f"{a:08x}-{b:04x}-{c:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"


def partitions(read: Reader, disk_size: int) -> list[Partition]:
    """The disk's partitions from its MBR, or its GPT when the MBR is protective; the whole disk when
    there is no table (a file system made on the bare disk). Reads at most a few hundred KiB; raises
    UnreadableDisk for a table that cannot be right."""
    head = read(0, 34 * 512)
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return [Partition(0, disk_size, "whole disk")]
    entries = [struct.unpack_from("<B3xB3xII", head, 446 + 16 * n) for n in range(4)]
    if any(kind == 0xEE for _, kind, _, _ in entries):
        return _gpt_partitions(read, disk_size, head)
    return [Partition(first * 512, count * 512, f"{kind:02x}")
            for _, kind, first, count in entries if kind and count and (first + count) * 512 <= disk_size]


def _gpt_partitions(read: Reader, disk_size: int, head: bytes) -> list[Partition]:
    if len(head) < 512 + 92 or head[512:520] != b"EFI PART":
        return []
    entries_lba, count, entry_size = struct.unpack_from("<QII", head, 512 + 72)
    if entry_size not in GPT_ENTRY_SIZES:
        raise UnreadableDisk(f"its GPT gives a partition entry size of {entry_size} bytes")
    if not 2 <= entries_lba < disk_size // 512:
        raise UnreadableDisk(f"its GPT puts the partition entries at sector {entries_lba}, outside the disk")
    table = read(entries_lba * 512, min(count, GPT_MAX_ENTRIES) * entry_size)
    out = []
    for n in range(len(table) // entry_size):
        entry = table[n * entry_size : (n + 1) * entry_size]
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if first <= last and (last + 1) * 512 <= disk_size:  # else not a partition this disk can hold
            out.append(Partition(first * 512, (last - first + 1) * 512, _guid(entry[:16])))
    return out


def file_system(read: Reader, part: Partition) -> str | None:
    """`ext` or `xfs` when the partition holds one, from its superblock magic."""
    if read(part.start + EXT_MAGIC_OFFSET, 2) == b"\x53\xef":
        return "ext"
    if read(part.start, 4) == b"XFSB":
        return "xfs"
    return None


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)


def read_marker(ctx: JobContext, disk: DiskRecord) -> tuple[str, QuiesceMarker | None, str]:
    """(outcome, marker, detail) for one backed-up disk; outcome is found | missing | unreadable | skipped."""
    repo = ctx.repo
    index = repo.get_index(disk)

    def read(offset: int, length: int) -> bytes:
        return read_range(repo, index, offset, length)

    try:
        found = [(p, fs) for p in partitions(read, index.disk_size) if (fs := file_system(read, p))]
    except UnreadableDisk as exc:
        return "unreadable", None, f"disk {disk.name}: {exc}"
    ext = next((p for p, fs in found if fs == "ext"), None)
    if ext is None:
        if any(fs == "xfs" for _, fs in found):
            return "skipped", None, "the root file system is XFS: reading the marker from XFS is not supported yet"
        return "skipped", None, f"no ext2/3/4 file system on disk {disk.name}"
    debugfs = _tool("debugfs")
    if debugfs is None:
        return "skipped", None, "debugfs is not installed on the proxy (Debian package e2fsprogs)"
    tmpdir = os.path.join(str(ctx.settings.workdir), "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    path = os.path.join(tmpdir, f"quiesce-{disk.index.replace('/', '-')}.raw")
    try:
        restore_disk(repo, index, FileTarget(path, "raw", overwrite=True), workers=ctx.settings.workers)
        out = child.run([*_no_network(), debugfs, "-R", f"cat {MARKER_PATH}", f"{path}?offset={ext.start}"],
                        DEBUGFS)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    if out.truncated or out.timed_out or out.returncode < 0:
        return "unreadable", None, f"reading {MARKER_PATH} on disk {disk.name}: debugfs: {out.problem}"
    text = out.stdout.decode(errors="replace")
    marker = parse_marker(text)
    if marker is not None:
        return "found", marker, ""
    if "not found" in out.stderr.lower():  # debugfs exits 0 for a missing file
        return "missing", None, f"no {MARKER_PATH} on disk {disk.name}: is the freeze hook installed?"
    if text.strip():
        return "unreadable", None, f"{MARKER_PATH} on disk {disk.name} is not a stackvault marker"
    problem = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("debugfs ")]
    return "skipped", None, f"debugfs could not read disk {disk.name}: {' '.join(problem)[-200:] or out.returncode}"


@functools.cache
def _no_network() -> list[str]:
    """A prefix that runs a helper without network when the proxy may take it away (root, in a
    place that allows new namespaces: a container without CAP_SYS_ADMIN does not), else nothing."""
    unshare = _tool("unshare")
    if unshare is None or os.geteuid() != 0:
        return []
    prefix = [unshare, "--net", "--"]
    return prefix if child.run([*prefix, "true"]).returncode == 0 else []


def _earlier_nonces(ctx: JobContext, record: BackupRecord, limit: int = 5) -> set[str]:
    """Nonces of this server's latest earlier proofs: the same nonce again means the same old freeze."""
    server_id = (record.source or {}).get("server", {}).get("id")
    if not server_id:
        return set()
    rows = [r for r in ctx.catalog.backups(ctx.repo.id)
            if r.backup_id < record.backup_id and (r.source or {}).get("server", {}).get("id") == server_id]
    nonces = set()
    for row in rows[-limit:]:
        proof = ctx.repo.proofs.load(row.backup_id)
        if proof and proof.get("marker"):
            nonces.add(proof["marker"]["nonce"])
    return nonces


def judge(marker: QuiesceMarker, window: tuple[float, float], earlier_nonces: set[str]) -> tuple[bool, str]:
    """Is the marker this snapshot's freeze? (fresh, reason)"""
    start, end = window
    when = datetime.fromtimestamp(marker.time, UTC).isoformat(timespec="seconds")
    if marker.state != "frozen":
        return False, (f"the marker says {marker.state} (freeze at {when}): the file systems were not frozen "
                       "when the snapshot was taken")
    if marker.nonce in earlier_nonces:
        return False, f"the marker (freeze at {when}) is the one an earlier backup already saw"
    if marker.time < start - CLOCK_SKEW_S:
        return False, f"the newest freeze marker is from {when}, {start - marker.time:.0f} s before the snapshot"
    if marker.time > end + CLOCK_SKEW_S:
        return False, (f"the marker time {when} is {marker.time - end:.0f} s after the snapshot: "
                       "check the guest's clock")
    return True, f"frozen at {when}, within the snapshot's window"


def prove_quiesce(ctx: JobContext, record: BackupRecord, window: tuple[float, float]) -> dict:
    """Read and judge the marker on the record's root disk; store the proof; return it."""
    server = (record.source or {}).get("server", {})
    root = (server.get("root_device_name") or "/dev/vda").rsplit("/", 1)[-1]
    disk = next((d for d in record.disks if d.name == root), None)
    proof: dict = {"backup_id": record.backup_id, "server_id": server.get("id"), "disk": root,
                   "checked": datetime.now(UTC).isoformat(timespec="seconds"),
                   "window": [round(window[0], 3), round(window[1], 3)], "clock_skew_s": CLOCK_SKEW_S,
                   "consistency": record.consistency, "marker": None}
    started = time.monotonic()
    if disk is None:
        proof.update(status="skipped", message=f"the backup has no root disk {root}")
    else:
        outcome, marker, detail = read_marker(ctx, disk)
        if marker is None:
            proof.update(status=outcome, message=detail or outcome)
        else:
            fresh, reason = judge(marker, window, _earlier_nonces(ctx, record))
            proof.update(status="verified" if fresh else "stale", message=reason,
                         marker={"state": marker.state, "time": marker.time, "nonce": marker.nonce})
            if fresh:
                proof["consistency"] = VERIFIED
    proof["duration_s"] = round(time.monotonic() - started, 3)
    if proof["status"] in ("verified", "stale", "missing", "unreadable"):
        save_proof(ctx, proof)
    return proof


def save_proof(ctx: JobContext, proof: dict) -> None:
    """The proof as a repository object (survives a catalog rebuild) and in the catalog row."""
    ctx.repo.proofs.save(proof)
    if proof["status"] == "verified":
        set_catalog_consistency(ctx, proof["backup_id"], VERIFIED)


def set_catalog_consistency(ctx: JobContext, backup_id: str, consistency: str) -> None:
    from ..catalog.models import BackupRow

    with ctx.catalog.session() as s, s.begin():
        row = s.get(BackupRow, backup_id)
        if row is not None:
            row.consistency = consistency


def apply_proofs(ctx: JobContext) -> int:
    """After `catalog rebuild`: put verified consistencies back from the proofs in the repository."""
    count = 0
    for backup_id in ctx.repo.proofs.backup_ids():
        proof = ctx.repo.proofs.load(backup_id)
        if proof and proof.get("status") == "verified":
            set_catalog_consistency(ctx, proof["backup_id"], VERIFIED)
            count += 1
    return count


def prove_after_backup(ctx: JobContext, record: BackupRecord, result, window: tuple[float, float]) -> None:
    """Called by the cloud backup after a committed server backup; updates its item `result`.

    Never raises: the backup is committed and good whatever the proof finds. A verified marker
    upgrades the item's consistency; a stale one is a warning (the hook is there but did not run for
    this snapshot); a missing marker is only noted (the hook is not installed).
    """
    if record.consistency in (None, CRASH):
        return
    try:
        proof = prove_quiesce(ctx, record, window)
    except (StackvaultError, OSError) as exc:
        proof = {"backup_id": record.backup_id, "status": "skipped", "message": f"could not check: {exc}"}
    result.report["quiesce_proof"] = {k: proof.get(k) for k in ("status", "message", "marker")}
    if proof["status"] == "verified":
        result.consistency = VERIFIED
    elif proof["status"] in ("stale", "unreadable"):
        warning = f"no fresh quiesce marker on the backed-up disk: {proof['message']}"
        result.report["warnings"] = [*result.report.get("warnings", []), warning]  # not the record's list
        if result.status == "success":
            result.status = "warning"


def with_proof(repo: Repository, shown: dict) -> dict:
    """A backup as `show` prints it, with its proof of quiesce (and the consistency it proves)."""
    proof = repo.proofs.load(shown["backup_id"])
    if proof is not None:
        shown["quiesce_proof"] = {k: proof.get(k) for k in ("status", "message", "marker", "checked")}
        if proof.get("status") == "verified":
            shown["consistency"] = VERIFIED
    return shown
