"""Per-disk working state (`<disk>.sha`, `<disk>.bmp`): a cache of the repository, never the truth.

The state is trusted only when it names the disk's newest committed backup and its checksums hold;
otherwise it is rebuilt from that backup's block index (and the `.bmp` from the disk's last Full), with
a warning. A lost or damaged state therefore never turns an Incremental into a Full, and can never
make an Incremental compare against the wrong base.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from ..errors import DamagedRecordError, NotFoundError, RepositoryError, StateError
from .atomic import write_atomic
from .bitmap import ChangeBitmap
from .blockindex import BlockIndex, IndexFormatError, differing_blocks
from .manifest import DiskRecord
from .repository import Repository


def _read_state(path: Path) -> bytes | None:
    """A state file's bytes; None when missing. One that cannot be read (the working directory is a
    file, or not readable) is reported as damaged, so it is rebuilt from the repository like one."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexFormatError(f"cannot be read: {exc.strerror}") from None


def state_name(disk_key: str) -> str:
    """A readable, unique file name stem for a disk key."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", disk_key).strip("-")[-60:]
    return f"{slug}-{blake3.blake3(disk_key.encode()).hexdigest()[:10]}"


@dataclass
class DiskBase:
    """What a new backup of one disk compares against."""

    previous: BlockIndex | None = None
    bitmap: ChangeBitmap | None = None
    base_backup_id: str | None = None
    full_backup_id: str | None = None
    #: What the source recorded of itself in the newest backup (an RBD snapshot's name and id).
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class WorkingState:
    def __init__(self, workdir: str | Path, repo: Repository) -> None:
        self.dir = Path(workdir) / repo.id
        self.repo = repo

    def paths(self, disk_key: str) -> tuple[Path, Path]:
        stem = state_name(disk_key)
        return self.dir / f"{stem}.sha", self.dir / f"{stem}.bmp"

    def _read_sha(self, path: Path, disk: DiskRecord) -> BlockIndex | None:
        data = _read_state(path)
        return None if data is None else BlockIndex.from_bytes(data, disk.size, disk.block_size)

    def _read_bmp(self, path: Path) -> ChangeBitmap | None:
        data = _read_state(path)
        return None if data is None else ChangeBitmap.from_bytes(data)

    def base_for(self, disk_key: str, name: str) -> DiskBase:
        """Load the state of a disk, rebuilding what is missing, stale or corrupt from the repository."""
        latest = self.repo.latest_disk(disk_key)
        if latest is None:
            return DiskBase()
        record, disk = latest
        base = DiskBase(base_backup_id=record.backup_id, full_backup_id=disk.full_backup_id, meta=disk.meta)
        sha_path, bmp_path = self.paths(disk_key)
        problem = None
        try:
            sha = self._read_sha(sha_path, disk)
            if sha is None:
                problem = f"{sha_path.name} is missing"
            elif sha.backup_id != record.backup_id or sha.checksum().hex() != disk.index_checksum:
                problem = f"{sha_path.name} is stale (from backup {sha.backup_id or '?'}, newest is {record.backup_id})"
            else:
                base.previous = sha
        except IndexFormatError as exc:
            problem = f"{sha_path.name} is damaged ({exc})"
        if problem:
            base.previous = self.repo.get_index(disk)
            base.warnings.append(f"working state of {name}: {problem}; rebuilt from backup {record.backup_id}")
        problem = None
        try:
            bmp = self._read_bmp(bmp_path)
            if bmp is None:
                problem = f"{bmp_path.name} is missing"
            elif bmp.backup_id != record.backup_id or bmp.full_backup_id != disk.full_backup_id \
                    or bmp.disk_size != disk.size or bmp.block_size != disk.block_size:
                problem = f"{bmp_path.name} is stale"
            else:
                base.bitmap = bmp
        except IndexFormatError as exc:
            problem = f"{bmp_path.name} is damaged ({exc})"
        if problem:
            base.bitmap, why = self.rebuild_bitmap(disk, base.previous, record.backup_id)  # type: ignore[arg-type]  # set above
            base.warnings.append(f"change bitmap of {name}: {problem}; rebuilt from the repository"
                                 + (f" ({why})" if why else ""))
        return base

    def rebuild_bitmap(self, disk: DiskRecord, newest: BlockIndex,
                       backup_id: str) -> tuple[ChangeBitmap, str | None]:
        """Blocks that differ between the disk's last Full and its newest backup, and why every block
        counts as changed when it does.

        If that Full was pruned, or its record or block index is damaged, every block counts as
        changed: a Differential then stores them all, which is safe where guessing would not be
        (failing instead would leave the disk without its backup until someone forgets the Full).
        """
        why: str | None
        full, why = None, f"its Full backup {disk.full_backup_id} was pruned"
        if disk.full_backup_id in self.repo.backup_ids():
            try:
                full_rec = self.repo.get_backup(disk.full_backup_id)
                full_disk = next((d for d in full_rec.disks if d.disk_key == disk.disk_key), None)
                full = self.repo.get_index(full_disk) if full_disk is not None else None
                why = None
            except DamagedRecordError as exc:
                why = f"the record of its Full backup {disk.full_backup_id} is damaged ({exc.problem})"
            except NotFoundError:
                pass  # pruned meanwhile
            except RepositoryError as exc:  # get_index: the Full's block index is missing or damaged
                why = f"its Full backup {disk.full_backup_id} cannot be read ({exc.message})"
        if full is None or full.disk_size != newest.disk_size or full.block_size != newest.block_size:
            bitmap = ChangeBitmap.every(disk.size, disk.block_size, disk.full_backup_id, backup_id)
            return bitmap, f"{why}: every block counts as changed" if why else None
        bitmap = ChangeBitmap.empty(disk.size, disk.block_size, disk.full_backup_id, backup_id)
        for i in differing_blocks(full, newest):
            bitmap.set(i)
        return bitmap, None

    def save(self, disk_key: str, index_bytes: bytes, bitmap: ChangeBitmap) -> None:
        """Advance the state to a committed backup: `index_bytes` are its block index as the repository
        holds it (an index of an older format stays in it, so its checksum still matches the record)."""
        sha_path, bmp_path = self.paths(disk_key)
        try:
            os.makedirs(self.dir, exist_ok=True)
            write_atomic(sha_path, index_bytes)
            write_atomic(bmp_path, bitmap.to_bytes())
        except OSError as exc:
            raise StateError(f"cannot write working state in {self.dir}: {exc.strerror}",
                             "free space or fix permissions; the next backup rebuilds it from the repository") from None

    def rebuild(self, disk_key: str) -> str | None:
        """Rewrite a disk's state from the repository; returns the backup id it now names."""
        latest = self.repo.latest_disk(disk_key)
        if latest is None:
            return None
        record, disk = latest
        index, stored = self.repo.read_index(disk)
        self.save(disk_key, stored, self.rebuild_bitmap(disk, index, record.backup_id)[0])
        return record.backup_id
