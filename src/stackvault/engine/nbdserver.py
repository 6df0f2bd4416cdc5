"""A read-only NBD server of one backed-up disk, its blocks read from the repository on demand.

qemu-img, QEMU and libguestfs all speak NBD, so one small server lets any of them read a backup in
place: no restore to a scratch file first. It speaks the fixed-newstyle handshake with the options
those clients use (NBD_OPT_GO / INFO / EXPORT_NAME / LIST / ABORT, and STRUCTURED_REPLY with
LIST/SET_META_CONTEXT for the `base:allocation` context; everything else is refused) and answers
READ from a `DiskReader`; writes, trims and zeroing get EPERM: the export is read-only on the wire,
whatever a client tries. BLOCK_STATUS answers from the block index, so `qemu-img convert` / `map`
and QEMU skip the disk's holes instead of reading their zeros.

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
_STRUCTURED_REPLY = struct.Struct(">IHHQI")
_STRUCTURED_REPLY_MAGIC = 0x668E33EF
_REPLY_FLAG_DONE = 1
_REPLY_TYPE_OFFSET_DATA = 1
_REPLY_TYPE_BLOCK_STATUS = 5
_REPLY_TYPE_ERROR = (1 << 15) + 1

_FLAG_FIXED_NEWSTYLE = 1
_FLAG_NO_ZEROES = 2
_CLIENT_NO_ZEROES = 2

_OPT_EXPORT_NAME = 1
_OPT_ABORT = 2
_OPT_LIST = 3
_OPT_INFO = 6
_OPT_GO = 7
_OPT_STRUCTURED_REPLY = 8
_OPT_LIST_META_CONTEXT = 9
_OPT_SET_META_CONTEXT = 10

_REP_ACK = 1
_REP_SERVER = 2
_REP_INFO = 3
_REP_META_CONTEXT = 4
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
_CMD_BLOCK_STATUS = 7
_CMD_FLAG_REQ_ONE = 1 << 3

#: The one metadata context served: which ranges are holes (read as zeros) and which hold data.
ALLOCATION_CONTEXT = b"base:allocation"
_ALLOCATION_ID = 1
_STATE_HOLE_ZERO = 3  # NBD_STATE_HOLE | NBD_STATE_ZERO
#: The most extents one BLOCK_STATUS reply describes (the client asks again past them).
MAX_EXTENTS = 4096

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
        session = _Session()
        with conn:
            try:
                if self._handshake(conn, session):
                    self._transmit(conn, session)
            except (_Closed, OSError, RuntimeError):
                pass  # the client hung up or broke the protocol, or the server is closing: this connection ends
            finally:
                with self._conns_lock:
                    self._conns.discard(conn)

    def _handshake(self, conn: socket.socket, session: _Session) -> bool:
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
            elif option == _OPT_STRUCTURED_REPLY:
                if data:
                    _reply(conn, option, _REP_ERR_INVALID)
                    continue
                session.structured = True
                _reply(conn, option, _REP_ACK)
            elif option in (_OPT_LIST_META_CONTEXT, _OPT_SET_META_CONTEXT):
                queries = _meta_queries(data)
                if queries is None or (option == _OPT_SET_META_CONTEXT and not session.structured):
                    _reply(conn, option, _REP_ERR_INVALID)
                    continue
                wanted = any(q == ALLOCATION_CONTEXT or (option == _OPT_LIST_META_CONTEXT and q == b"base:")
                             for q in queries) or (option == _OPT_LIST_META_CONTEXT and not queries)
                if option == _OPT_SET_META_CONTEXT:
                    session.allocation = wanted
                if wanted:
                    _reply(conn, option, _REP_META_CONTEXT, struct.pack(">I", _ALLOCATION_ID) + ALLOCATION_CONTEXT)
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

    def _transmit(self, conn: socket.socket, session: _Session) -> None:
        size = self.reader.size
        while True:
            magic, flags, cmd, handle, offset, length = _REQUEST.unpack(_recv(conn, _REQUEST.size))
            if magic != _REQUEST_MAGIC:
                return
            if cmd == _CMD_DISC:
                return
            if cmd == _CMD_READ:
                if length > MAX_REQUEST or offset + length > size:
                    _error(conn, session, handle, errno.EINVAL)
                    continue
                try:
                    data = self.reader.read(offset, length)
                except StackvaultError:  # a damaged chunk: the client sees an I/O error, never its bytes
                    _error(conn, session, handle, errno.EIO)
                    continue
                if session.structured:  # a read must be answered in structured form once it is agreed
                    conn.sendall(_STRUCTURED_REPLY.pack(_STRUCTURED_REPLY_MAGIC, _REPLY_FLAG_DONE,
                                                        _REPLY_TYPE_OFFSET_DATA, handle, 8 + len(data))
                                 + struct.pack(">Q", offset) + data)
                else:
                    conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, 0, handle) + data)
            elif cmd == _CMD_BLOCK_STATUS:
                if not session.allocation or length == 0 or offset + length > size:
                    _error(conn, session, handle, errno.EINVAL)
                    continue
                extents = _extents(self.reader, offset, length, one=bool(flags & _CMD_FLAG_REQ_ONE))
                payload = struct.pack(">I", _ALLOCATION_ID) + b"".join(struct.pack(">II", n, state)
                                                                       for n, state in extents)
                conn.sendall(_STRUCTURED_REPLY.pack(_STRUCTURED_REPLY_MAGIC, _REPLY_FLAG_DONE,
                                                    _REPLY_TYPE_BLOCK_STATUS, handle, len(payload)) + payload)
            elif cmd == _CMD_WRITE:
                _drain(conn, length)  # the payload follows the request: read past it, then refuse
                conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, errno.EPERM, handle))
            elif cmd == _CMD_FLUSH:
                conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, 0, handle))
            else:  # trim, write zeroes, cache, block status...: not on a read-only export
                conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, errno.EPERM, handle))


class _Session:
    """What one client agreed to in its handshake."""

    def __init__(self) -> None:
        self.structured = False  # NBD_OPT_STRUCTURED_REPLY
        self.allocation = False  # base:allocation selected by NBD_OPT_SET_META_CONTEXT


def _error(conn: socket.socket, session: _Session, handle: int, code: int) -> None:
    """A failed request's reply: a structured error chunk once structured replies are agreed."""
    if session.structured:
        conn.sendall(_STRUCTURED_REPLY.pack(_STRUCTURED_REPLY_MAGIC, _REPLY_FLAG_DONE, _REPLY_TYPE_ERROR,
                                            handle, 6) + struct.pack(">IH", code, 0))
    else:
        conn.sendall(_SIMPLE_REPLY.pack(_SIMPLE_REPLY_MAGIC, code, handle))


def _extents(reader: DiskReader, offset: int, length: int, *, one: bool) -> list[tuple[int, int]]:
    """(length, NBD state) of the data runs and holes of [offset, offset+length), from the index; at
    most MAX_EXTENTS of them (one with REQ_ONE), each at most 4 GiB - 1 (NBD's 32-bit length)."""
    end = offset + length
    found: list[tuple[int, int]] = []
    at = offset
    while at < end and len(found) < (1 if one else MAX_EXTENTS):
        data_end = reader.hole_from(at)
        if data_end > at:
            stop, state = min(data_end, end), 0
        else:
            data = reader.data_from(at)
            stop, state = min(end if data is None else data, end), _STATE_HOLE_ZERO
        stop = min(stop, at + 0xFFFFF000)  # the largest 4 KiB multiple a descriptor's 32 bits hold
        found.append((stop - at, state))
        at = stop
    return found


def _meta_queries(data: bytes) -> list[bytes] | None:
    """NBD_OPT_LIST/SET_META_CONTEXT data: name length, name, query count, (length, query)s; None if
    malformed."""
    try:
        (name_len,) = struct.unpack_from(">I", data, 0)
        at = 4 + name_len
        (count,) = struct.unpack_from(">I", data, at)
        at += 4
        queries = []
        for _ in range(count):
            (n,) = struct.unpack_from(">I", data, at)
            queries.append(data[at + 4 : at + 4 + n])
            at += 4 + n
    except struct.error:
        return None
    return queries if at == len(data) else None


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
