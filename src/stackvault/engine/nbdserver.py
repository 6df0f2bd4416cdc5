"""A read-only NBD server of one backed-up disk, its blocks read from the repository on demand.

qemu-img, QEMU and libguestfs all speak NBD, so one small server lets any of them read a backup in
place: no restore to a scratch file first. It speaks the fixed-newstyle handshake with the options
those clients use (NBD_OPT_GO / INFO / EXPORT_NAME / LIST / ABORT; everything else, structured
replies included, is refused so the client falls back to simple replies) and answers READ from a
`DiskReader`; writes, trims and zeroing get EPERM: the export is read-only on the wire, whatever a
client tries.

It listens on a Unix socket only, created 0600 so that only the proxy user may connect: NBD has no
authentication, and a TCP port, even on loopback, lets every local user read the tenant's disk.
Each connection is served on a thread of its own; all share one reader and its cache. At most
`MAX_CONNECTIONS` are served at once (each may hold a `MAX_REQUEST` buffer); a further client is
hung up on at once, so no client can make the server's memory grow without bound.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable

from ..errors import StackvaultError, UsageError
from .diskreader import DiskReader

_NBD_MAGIC = b"NBDMAGIC"
_IHAVEOPT = b"IHAVEOPT"
_OPT_REPLY_MAGIC = 0x3E889045565A9
_REQUEST = struct.Struct(">IHHQQI")
_REQUEST_MAGIC = 0x25609513
_SIMPLE_REPLY = struct.Struct(">IIQ")
_SIMPLE_REPLY_MAGIC = 0x67446698

_FLAG_FIXED_NEWSTYLE = 1
_FLAG_NO_ZEROES = 2
_CLIENT_NO_ZEROES = 2

_OPT_EXPORT_NAME = 1
_OPT_ABORT = 2
_OPT_LIST = 3
_OPT_INFO = 6
_OPT_GO = 7

_REP_ACK = 1
_REP_SERVER = 2
_REP_INFO = 3
_REP_ERR_UNSUP = (1 << 31) + 1
_REP_ERR_INVALID = (1 << 31) + 3

_INFO_EXPORT = 0
_INFO_BLOCK_SIZE = 3

_TFLAG_HAS_FLAGS = 1
_TFLAG_READ_ONLY = 2
_TFLAG_SEND_FLUSH = 4
_TFLAG_CAN_MULTI_CONN = 1 << 8
TRANSMISSION_FLAGS = _TFLAG_HAS_FLAGS | _TFLAG_READ_ONLY | _TFLAG_SEND_FLUSH | _TFLAG_CAN_MULTI_CONN

_CMD_READ = 0
_CMD_WRITE = 1
_CMD_DISC = 2
_CMD_FLUSH = 3

#: The largest request served (what NBD_INFO_BLOCK_SIZE announces): bounds a connection's memory.
MAX_REQUEST = 32 << 20
#: Connections served at once; more are hung up on (each may hold a MAX_REQUEST buffer).
MAX_CONNECTIONS = 8
#: The longest option a client may send (export names are short): bounds the handshake's memory.
_MAX_OPTION = 64 << 10


class _Closed(Exception):
    """The client went away."""


class NbdServer:
    """Serves `reader` on the Unix socket `address`."""

    def __init__(self, reader: DiskReader, address: str) -> None:
        self.reader = reader
        self.address = address
        self._sock = _listen(address)
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Accept and serve connections until `stop`."""
        if ready is not None:
            ready()
        self._sock.settimeout(0.2)  # so a stop is noticed without a connection
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            conn.settimeout(None)
            with self._conns_lock:
                if len(self._conns) >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                self._conns.add(conn)
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True, name="sv-nbd-conn").start()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop listening and end every connection, before the reader they use is closed."""
        self._stop.set()
        self._sock.close()
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        try:
            os.unlink(self.address)
        except FileNotFoundError:
            pass

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self._handshake(conn):
                    self._transmit(conn)
            except (_Closed, OSError, RuntimeError):
                pass  # the client hung up or broke the protocol, or the server is closing: this connection ends
            finally:
                with self._conns_lock:
                    self._conns.discard(conn)

    def _handshake(self, conn: socket.socket) -> bool:
        """The option haggling; True when the client entered transmission."""
        conn.sendall(_NBD_MAGIC + _IHAVEOPT + struct.pack(">H", _FLAG_FIXED_NEWSTYLE | _FLAG_NO_ZEROES))
        (client_flags,) = struct.unpack(">I", _recv(conn, 4))
        while True:
            magic, option, length = struct.unpack(">8sII", _recv(conn, 16))
            if magic != _IHAVEOPT or length > _MAX_OPTION:
                return False
            data = _recv(conn, length)
            if option == _OPT_EXPORT_NAME:
                conn.sendall(struct.pack(">QH", self.reader.size, TRANSMISSION_FLAGS)
                             + (b"" if client_flags & _CLIENT_NO_ZEROES else bytes(124)))
                return True
            if option == _OPT_ABORT:
                _reply(conn, option, _REP_ACK)
                return False
            if option == _OPT_LIST:
                _reply(conn, option, _REP_SERVER, struct.pack(">I", 0))
                _reply(conn, option, _REP_ACK)
            elif option in (_OPT_INFO, _OPT_GO):
                if not _valid_info_request(data):
                    _reply(conn, option, _REP_ERR_INVALID)
                    continue
                _reply(conn, option, _REP_INFO, struct.pack(">HQH", _INFO_EXPORT, self.reader.size,
                                                            TRANSMISSION_FLAGS))
                _reply(conn, option, _REP_INFO, struct.pack(">HIII", _INFO_BLOCK_SIZE, 1, 4096, MAX_REQUEST))
                _reply(conn, option, _REP_ACK)
                if option == _OPT_GO:
                    return True
            else:
                _reply(conn, option, _REP_ERR_UNSUP)

    def _transmit(self, conn: socket.socket) -> None:
        size = self.reader.size
        while True:
            magic, _flags, cmd, handle, offset, length = _REQUEST.unpack(_recv(conn, _REQUEST.size))
            if magic != _REQUEST_MAGIC:
                return
            if cmd == _CMD_DISC:
                return
            if cmd == _CMD_READ:
                if length > MAX_REQUEST or offset + length > size:
                    conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, errno.EINVAL, handle))
                    continue
                try:
                    data = self.reader.read(offset, length)
                except StackvaultError:  # a damaged chunk: the client sees an I/O error, never its bytes
                    conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, errno.EIO, handle))
                    continue
                conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, 0, handle) + data)
            elif cmd == _CMD_WRITE:
                _drain(conn, length)  # the payload follows the request: read past it, then refuse
                conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, errno.EPERM, handle))
            elif cmd == _CMD_FLUSH:
                conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, 0, handle))
            else:  # trim, write zeroes, cache, block status...: not on a read-only export
                conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, errno.EPERM, handle))


def _valid_info_request(data: bytes) -> bool:
    """NBD_OPT_INFO/GO data: name length, name, count of info requests, the requests (2 bytes each)."""
    if len(data) < 6:
        return False
    (name_len,) = struct.unpack(">I", data[:4])
    if len(data) < 6 + name_len:
        return False
    (count,) = struct.unpack(">H", data[4 + name_len : 6 + name_len])
    return len(data) == 6 + name_len + 2 * count


def _reply(conn: socket.socket, option: int, kind: int, data: bytes = b"") -> None:
    conn.sendall(struct.pack(">QIII", _OPT_REPLY_MAGIC, option, kind, len(data)) + data)


def _recv(conn: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        r = conn.recv_into(view[got:], n - got)
        if r == 0:
            raise _Closed
        got += r
    return bytes(buf)


def _drain(conn: socket.socket, n: int) -> None:
    while n > 0:
        n -= len(_recv(conn, min(n, 1 << 20)))


def _is_tcp(address: str) -> bool:
    """`HOST:PORT` rather than a socket path (a path has no colon or begins with / or .)."""
    return not address.startswith(("/", ".")) and ":" in address


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _listen(address: str) -> socket.socket:
    """A listening Unix socket (0600), never a TCP port: NBD has no authentication."""
    if _is_tcp(address):
        raise UsageError(f"NBD address {address} is a TCP address: any local user could read the disk over it",
                         "serve on a Unix socket, e.g. --socket /run/stackvault/nbd.sock (created 0600)")
    path = os.path.abspath(address)
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise UsageError(f"{path} exists and is not a socket", "choose another --socket path")
        if _answers(path):
            raise UsageError(f"another server listens on {path}", "stop it or choose another --socket path")
        os.unlink(path)  # a stale socket of a killed server
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {path}: {exc.strerror}",
                         "choose a --socket path in a directory this user can write") from None
    finally:
        os.umask(old)
    sock.listen(MAX_CONNECTIONS)
    return sock
