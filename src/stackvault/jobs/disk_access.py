"""Reading a backed-up disk in place: the NBD export (`serve-nbd`) that file restore builds on.

While a disk is open the job holds the repository's read lock (as a restore does), so `gc` waits and
no chunk the reader may still ask for is deleted under it; the lock's lease is refreshed in the
background for as long as the export runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from ..engine.diskreader import DiskReader
from ..engine.nbdserver import NbdServer
from ..errors import warn
from .context import JobContext


@dataclass(frozen=True)
class OpenDisk:
    backup_id: str
    disk: str
    size: int
    reader: DiskReader


@contextmanager
def open_disk(ctx: JobContext, ref: str, disk: str | None, cache_bytes: int | None = None,
              job: str = "read") -> Iterator[OpenDisk]:
    """One disk of one backup, readable on demand, under the repository's read lock."""
    repo = ctx.repo
    with ctx.lock("read", f"{job} {ref}") as lock:
        if lock.warning:
            warn(lock.warning)
        backup_id = repo.resolve(ref)
        d = repo.get_backup(backup_id).disk(disk)
        index = repo.get_index(d)
        kwargs = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
        with DiskReader(repo, index, **kwargs) as reader:
            yield OpenDisk(backup_id, d.name, d.size, reader)


def nbd_uri(address: str) -> str:
    """What qemu-img, QEMU and guestfish take for the export on the Unix socket `address`."""
    return f"nbd+unix:///?socket={address}"


@contextmanager
def serving(opened: OpenDisk, address: str) -> Iterator[NbdServer]:
    """An NBD server of `opened` on `address`, answering on a thread of its own while the block runs."""
    server = NbdServer(opened.reader, address)
    thread = threading.Thread(target=server.serve, daemon=True, name="sv-nbd")
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)


def serve_nbd(ctx: JobContext, ref: str, disk: str | None, address: str,
              announce: Callable[[str], None] | None = None) -> dict:
    """Serve one disk until SIGTERM or Ctrl-C; the report says what was served."""
    stop = threading.Event()

    def stopping(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, stopping) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with open_disk(ctx, ref, disk, job="serve-nbd") as opened, serving(opened, address):
            uri = nbd_uri(address)
            (announce or _to_stderr)(f"serving backup {opened.backup_id} disk {opened.disk} read-only on {uri}"
                                     " (stop with Ctrl-C or SIGTERM)")
            while not stop.wait(0.5):
                pass
            return {"backup_id": opened.backup_id, "disk": opened.disk, "size": opened.size, "uri": uri,
                    "blocks_fetched": opened.reader.fetched, "status": "stopped"}
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _to_stderr(line: str) -> None:
    print(f"stackvault: {line}", file=sys.stderr, flush=True)

