"""One regular file of a backed-up disk, read in chunks as a client pulls them: the API's download.

`file_restore.cat` hands a file to this process's stdout and `get` writes it to this host's disk; a
download over HTTP sends the bytes as the client reads them instead, nothing written on the proxy
and one chunk in memory at a time. The disk is opened as every file restore opens it
(`file_restore.browsing`: the NBD export, the libguestfs appliance, its time and memory bounds) and
stays open until the last chunk is sent or the client goes away.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

from ..engine.guestfiles import TIMEOUT_S, DiskFiles, Entry
from .context import JobContext
from .file_restore import browsing, regular_file


class FileDownload:
    """An open file of one disk of one backup; `close` (or the end of `chunks`) shuts the appliance down."""

    def __init__(self, backup_id: str, disk: str, entry: Entry, files: DiskFiles, opened: ExitStack) -> None:
        self.backup_id = backup_id
        self.disk = disk
        self.entry = entry
        self._files = files
        self._opened = opened

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes; the disk is closed after the last chunk, or when the reader stops early."""
        try:
            offset = 0
            while offset < self.entry.size:
                data = self._files.read(self.entry.path, offset, self.entry.size - offset)
                if not data:
                    break  # shorter than its size said (a hostile file system): the client sees it cut
                offset += len(data)
                yield data
        finally:
            self.close()

    def close(self) -> None:
        """Stop the appliance and the export (again: nothing)."""
        self._opened.close()


def open_file(ctx: JobContext, ref: str, disk: str | None, path: str, timeout: float = TIMEOUT_S) -> FileDownload:
    """`path` in one disk of backup `ref`, ready to be read: a path that does not exist or is not a
    regular file is refused here with `files cat`'s error, before the first byte."""
    opened = ExitStack()
    try:
        disk_opened, files = opened.enter_context(browsing(ctx, ref, disk, timeout))
        entry = regular_file(files, path)
    except BaseException:
        opened.close()
        raise
    return FileDownload(disk_opened.backup_id, disk_opened.disk, entry, files, opened)
