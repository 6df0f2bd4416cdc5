"""A minimal NBD client: reads a disk image by guest offsets through `qemu-nbd`.

qcow2 (and every other format qemu knows) must be read as the guest sees it, never as file bytes
whose layout changes between snapshots. `qemu-nbd` exports the guest view read-only on a unix socket;
this client speaks the fixed-newstyle handshake with NBD_OPT_EXPORT_NAME and simple replies, which is
all a sequential reader needs.

`qemu-nbd` serves one connection and exits when it closes; it dies with the process that started it
(engine.child), and the socket directory carries that process's pid, so the next export removes
what a killed job left behind (and stops any orphaned server an older version left running).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from ..errors import SourceError
from . import child, pids

_NBD_MAGIC = b"NBDMAGIC"
_IHAVEOPT = b"IHAVEOPT"
_FLAG_FIXED_NEWSTYLE = 1
_FLAG_NO_ZEROES = 2
_OPT_EXPORT_NAME = 1
_REQUEST_MAGIC = 0x25609513
_REPLY_MAGIC = 0x67446698
_CMD_READ = 0
_CMD_DISC = 2
_MAX_REQUEST = 32 << 20
SOCKET_DIR_PREFIX = "sv-nbd-"


class NbdExport:
    """A read-only `qemu-nbd` export of one image, with a connected client."""

    def __init__(self, image: str, path: str) -> None:
        """`image` is what qemu-nbd opens (a `json:` spec naming the format), `path` the file it names."""
        remove_leftovers()
        self._dir = tempfile.mkdtemp(prefix=f"{SOCKET_DIR_PREFIX}{os.getpid()}-")
        sock_path = os.path.join(self._dir, "s")
        try:
            self._proc = child.start(["qemu-nbd", "--read-only", "-k", sock_path, image],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise SourceError("qemu-nbd is not installed",
                              "install Debian's qemu-utils (make bootstrap does)") from None
        deadline = time.monotonic() + 20
        while not os.path.exists(sock_path):
            if self._proc.poll() is not None:
                err = self._proc.stderr.read(4096).decode(errors="replace").strip() if self._proc.stderr else ""
                self.close()
                raise SourceError(f"qemu-nbd cannot open {path}: {err}", "check the image with `qemu-img check`")
            if time.monotonic() > deadline:
                self.close()
                raise SourceError(f"qemu-nbd did not start for {path}", "check that qemu-utils is installed")
            time.sleep(0.01)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            while True:  # the socket file exists from bind(); connections are taken from listen()
                try:
                    self._sock.connect(sock_path)
                    break
                except ConnectionRefusedError:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        raise SourceError(f"qemu-nbd did not accept a connection for {path}",
                                          "check the image with `qemu-img check`") from None
                    time.sleep(0.01)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.size = self._handshake()
        except BaseException:
            self.close()
            raise
        self._handle = 0

    def _recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            r = self._sock.recv_into(view[got:], n - got)
            if r == 0:
                raise SourceError("qemu-nbd closed the connection", "check the image with `qemu-img check`")
            got += r
        return buf

    def _handshake(self) -> int:
        head = self._recv_exact(18)
        if head[:8] != _NBD_MAGIC or head[8:16] != _IHAVEOPT:
            raise SourceError("qemu-nbd spoke an unexpected protocol", "install Debian's qemu-utils")
        (server_flags,) = struct.unpack(">H", head[16:18])
        flags = _FLAG_FIXED_NEWSTYLE | (_FLAG_NO_ZEROES if server_flags & _FLAG_NO_ZEROES else 0)
        self._sock.sendall(struct.pack(">I", flags))
        self._sock.sendall(_IHAVEOPT + struct.pack(">II", _OPT_EXPORT_NAME, 0))
        size, _tflags = struct.unpack(">QH", self._recv_exact(10))
        if not flags & _FLAG_NO_ZEROES:
            self._recv_exact(124)
        return size

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            n = min(length, _MAX_REQUEST)
            self._handle += 1
            self._sock.sendall(struct.pack(">IHHQQI", _REQUEST_MAGIC, 0, _CMD_READ, self._handle, offset, n))
            magic, error, handle = struct.unpack(">IIQ", self._recv_exact(16))
            if magic != _REPLY_MAGIC or handle != self._handle:
                raise SourceError("qemu-nbd sent a malformed reply", "retry; report a bug if it persists")
            if error:
                raise SourceError(f"reading the image at offset {offset} failed (NBD error {error})",
                                  "check the image with `qemu-img check`")
            out += self._recv_exact(n)
            offset += n
            length -= n
        return bytes(out)

    def close(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                sock.sendall(struct.pack(">IHHQQI", _REQUEST_MAGIC, 0, _CMD_DISC, 0, 0, 0))
            except OSError:
                pass
            sock.close()
            self._sock = None  # type: ignore[assignment]  # closed: never used again
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def remove_leftovers() -> None:
    """Socket directories of processes that are gone, and the orphaned qemu-nbd servers still
    holding them. A directory whose server is still a running stackvault's child (an older
    version's job running now: its directory names no pid) is left alone."""
    tmp = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(tmp) if n.startswith(SOCKET_DIR_PREFIX)]
    except OSError:
        return
    for name in names:
        owner = name[len(SOCKET_DIR_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and pids.alive(int(owner)):
            continue
        directory = os.path.join(tmp, name)
        try:
            if os.stat(directory).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _stop_orphans_of(directory):
            shutil.rmtree(directory, ignore_errors=True)


def _is_stackvault(pid: int) -> bool:
    """Whether pid is a running stackvault (an orphan's new parent is init or a subreaper)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"stackvault" in f.read(1 << 16)
    except OSError:
        return False


def _stop_orphans_of(directory: str) -> bool:
    """Kills this user's orphaned qemu-nbd processes serving a socket in `directory`; False when a
    server there is still a running stackvault's child (the directory is in use)."""
    sock = os.path.join(directory, "s").encode()
    orphans = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read(1 << 16).split(b"\0")
            if not argv or os.path.basename(argv[0]) != b"qemu-nbd" or sock not in argv:
                continue
            parent = pids.parent(int(pid))
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                return False
        except (OSError, ValueError, IndexError):
            continue
        if parent is not None and parent != 1 and _is_stackvault(parent):
            return False
        orphans.append(int(pid))
    for orphan in orphans:
        try:
            os.kill(orphan, signal.SIGKILL)
        except OSError:
            pass
    return True
