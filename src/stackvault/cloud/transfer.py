"""Moving disk data out of Glance: resumable, checked downloads.

A download that breaks is resumed with an HTTP Range request from the byte it reached, a few times,
and every byte is hashed on the way: the image's `os_hash_value` (or its MD5 `checksum`) must match
before the backup that used it can commit, so a truncated or altered download never becomes a backup.
Raw images stream straight into the engine, and so do qcow2 images (what Nova's libvirt driver
uploads), through the engine's stream reader (`engine.qcow2stream`); other formats (vmdk, vdi, ...)
and qcow2 images using features the stream reader refuses go to a temporary file read through qemu.
The format is Glance's `disk_format`, never probed from the bytes, and an image naming another file
(a backing file, an external data file, vmdk extents) is refused: its owner would choose what the
proxy reads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import requests

from ..engine.qcow2stream import HEAD_SIZE, Qcow2StreamSource, Qcow2Unsupported, parse_header
from ..engine.sources import QEMU_FORMATS, DiskSource, QemuSource
from ..errors import SourceError
from ..retrying import RetryPolicy, first_line

READ_SIZE = 1 << 20
GLANCE_TO_QEMU = {"vhd": "vpc"}  # Glance's disk_format names where qemu's differ
log = logging.getLogger("stackvault.cloud")


class GlanceDownload:
    """Sequential reads of one image's data, resuming after dropped connections."""

    def __init__(self, conn, image, *, retries: int = 5, backoff_s: float = 1.0) -> None:
        self.conn = conn
        self.image = image
        self.size = int(image.size or 0)
        self.retries = retries
        self.backoff_s = backoff_s
        self.received = 0  # bytes that arrived from Glance (the next Range starts here)
        self.consumed = 0  # bytes handed to the reader
        self.resumes = 0
        algo = getattr(image, "hash_algo", None)
        self._hash: _HashThread | None
        if algo and getattr(image, "hash_value", None) and algo in hashlib.algorithms_available:
            self._hash, self._expected = _HashThread(hashlib.new(algo)), image.hash_value
        elif getattr(image, "checksum", None):
            self._hash, self._expected = _HashThread(hashlib.md5(usedforsecurity=False)), image.checksum
        else:
            self._hash, self._expected = None, None
        self._resp: requests.Response | None = None
        self._iter: Iterator[bytes] | None = None
        self._pieces: deque[bytes] = deque()  # as they arrived: a read of one whole piece copies nothing
        self._buffered = 0

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.received}-"} if self.received else {}
        resp = self.conn.image.get(f"/images/{self.image.id}/file", stream=True, headers=headers)
        if resp.status_code == 204:
            resp.close()
            raise SourceError(f"image {self.image.id} has no data (Glance answered 204)",
                              "it is a volume-backed snapshot: read its volume snapshots instead")
        if resp.status_code >= 400:
            resp.close()
            raise _Retryable(f"Glance answered HTTP {resp.status_code}")
        if self.received and resp.status_code != 206:
            resp.close()
            raise SourceError(f"Glance ignored a Range request for image {self.image.id}",
                              "the download cannot resume; retry the backup")
        self._resp = resp
        self._iter = resp.iter_content(READ_SIZE)

    def _fill(self, want: int) -> None:
        """Buffer at least `want` bytes. A broken connection is resumed from the byte it reached, under the
        retry policy with `retries` tries after each stall (the count starts again once data flows)."""
        policy = RetryPolicy(attempts=self.retries + 1, first_delay_s=self.backoff_s)
        while self._buffered < want:
            try:
                piece = policy.call(f"download of image {self.image.id}", self._next_piece, _resumable,
                                    on_retry=self._resumed)
            except (requests.RequestException, ConnectionError, _Retryable) as exc:
                raise SourceError(f"download of image {self.image.id} failed at byte {self.received} of "
                                  f"{self.size} after {self.retries} retries: {first_line(exc)}",
                                  "check Glance and retry the backup") from None
            self._pieces.append(piece)
            self._buffered += len(piece)
            self.received += len(piece)

    def _next_piece(self) -> bytes:
        """The next piece of the response, opening it (from the byte reached) when there is none."""
        try:
            if self._iter is None:
                self._open()
            return next(self._iter)  # type: ignore[arg-type]  # set by _open()
        except StopIteration:
            self._close_resp()
            raise _Retryable(f"the connection closed at byte {self.received} of {self.size}") from None
        except BaseException:
            self._close_resp()
            raise

    def _resumed(self) -> None:
        self.resumes += 1

    def _close_resp(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp, self._iter = None, None

    def read(self, length: int) -> bytes:
        """The next `length` bytes (fewer only at the end of the image)."""
        length = min(length, self.size - self.consumed)
        if length <= 0:
            return b""
        self._fill(length)
        parts, got = [], 0
        while got < length:
            piece = self._pieces.popleft()
            if got + len(piece) > length:
                self._pieces.appendleft(piece[length - got:])
                piece = piece[: length - got]
            parts.append(piece)
            got += len(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._buffered -= length
        self.consumed += length
        if self._hash is not None:
            self._hash.update(data)
        return data

    def check(self) -> None:
        """Every byte arrived and hashes to what Glance recorded."""
        if self.consumed != self.size or self._buffered:
            raise SourceError(f"download of image {self.image.id} is incomplete or too long: {self.received} "
                              f"bytes for an image of {self.size}", "retry the backup")
        if self._hash is not None and self._hash.hexdigest() != self._expected:
            raise SourceError(f"download of image {self.image.id} does not match its checksum "
                              f"({self._hash.name} {self._hash.hexdigest()[:16]}... != {self._expected[:16]}...)",
                              "retry the backup; if it repeats the image in Glance is damaged")

    def close(self) -> None:
        self._close_resp()
        if self._hash is not None:
            self._hash.stop()


class _HashThread:
    """Hashes a download on a thread of its own. sha512 costs about twice the download itself here,
    and hashlib releases the GIL, so meanwhile the reader parses and the engine hashes its blocks."""

    def __init__(self, hasher: hashlib._Hash) -> None:
        self.hasher = hasher
        self.name = hasher.name
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # at most ~4 MiB waiting
        self._thread: threading.Thread | None = None  # started by the first update

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self.hasher.update(data)

    def update(self, data: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sv-glance-hash", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.stop()
        return self.hasher.hexdigest()

    def stop(self) -> None:
        """Waits for what was queued; the thread ends."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _Retryable(Exception):
    """A server-side failure (5xx, 429) or a cut connection: worth another try from the byte reached."""


def _resumable(exc: BaseException) -> bool:
    return isinstance(exc, (requests.RequestException, ConnectionError, _Retryable))


class _GlanceStreamed(DiskSource):
    """A source fed by a download as the engine reads: its hash is checked once the last block was read,
    before anything commits."""

    download: GlanceDownload

    def finish(self) -> None:
        super().finish()
        self.download.check()

    def close(self) -> None:
        self.download.close()
        super().close()


class GlanceRawSource(_GlanceStreamed):
    """A raw image streamed from Glance into the engine, no temporary copy."""

    def data_extents(self) -> list[tuple[int, int]]:
        return [(0, self.size)] if self.size else []

    def read(self, offset: int, length: int) -> bytes:
        if offset != self.download.consumed:
            raise SourceError(f"a streamed image is read in order (asked {offset}, at {self.download.consumed})",
                              "this is a bug in stackvault; report it")
        return self.download.read(length)


class GlanceQcow2Source(_GlanceStreamed, Qcow2StreamSource):
    """A qcow2 image streamed from Glance through the engine's qcow2 stream reader, no temporary copy."""


def download_to_file(download: GlanceDownload, path: str, head: bytes = b"") -> None:
    """A whole image into a sparse local file (for formats the engine reads by guest offsets);
    `head` is what was already read from the download."""
    zero = bytes(READ_SIZE)
    with open(path, "wb") as f:
        f.write(head)
        while download.consumed < download.size:
            data = download.read(READ_SIZE)
            if data == zero[: len(data)]:
                f.seek(len(data), os.SEEK_CUR)
            else:
                f.write(data)
        f.truncate(download.size)
    download.check()


def open_image_source(conn, image, *, name: str, key: str, tmpdir: str, retries: int = 5) -> DiskSource:
    """A disk source for a Glance image: streamed when raw or qcow2, else downloaded then read through qemu."""
    download = GlanceDownload(conn, image, retries=retries)
    fmt = GLANCE_TO_QEMU.get(image.disk_format or "raw", image.disk_format or "raw")
    meta = {"image_id": image.id, "disk_format": image.disk_format or "raw"}
    if fmt != "raw" and fmt not in QEMU_FORMATS:  # the tenant sets disk_format: it names no other driver
        download.close()
        raise SourceError(f"image refused: image {image.id} ({name}) has disk_format {image.disk_format!r}",
                          f"stackvault reads raw, {', '.join(QEMU_FORMATS)} and vhd images")
    common: dict[str, Any] = {"path": f"glance:{image.id}", "name": name, "key": key, "format": fmt, "meta": meta}
    if fmt == "raw":
        raw = GlanceRawSource(size=download.size, **common)
        raw.download = download
        return raw
    head = b""
    if fmt == "qcow2":
        head = download.read(HEAD_SIZE)
        try:
            parse_header(head, f"{image.id} ({name})")  # ImageRefused (a backing file...) ends here
        except Qcow2Unsupported as exc:
            log.info("%s", exc)  # read from a local copy below: slower, so say why
        except BaseException:
            download.close()
            raise
        else:
            qcow2 = GlanceQcow2Source(**common)
            qcow2.download = download
            try:
                qcow2.open(download, head, tmpdir=tmpdir)
            except BaseException:
                qcow2.close()
                raise
            return qcow2
    os.makedirs(tmpdir, exist_ok=True)
    path = os.path.join(tmpdir, f"{image.id}.{fmt}")
    try:
        download_to_file(download, path, head)
        source = QemuSource(path=path, name=name, key=key, format=fmt, meta=meta)
        source.open()
    except BaseException:
        if os.path.exists(path):
            os.unlink(path)
        raise
    finally:
        download.close()
    source.owned_files.append(path)  # the temporary copy goes when the source is closed
    return source
