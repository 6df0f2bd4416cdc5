"""The fault proxy: a streaming reverse proxy in front of each service's public endpoint.

The public catalog and clouds.yaml point here; each request is checked against the fault rules
(`devcloud.faults`) and then either answered with an error the way that service words it, delayed,
or forwarded, with the response body streamed back and possibly cut after N bytes (a dropped
connection mid-download). Bodies move in 1 MiB blocks with no copy beyond the socket reads, so
1 GiB image transfers cost little (see README for the measured overhead).

Run as `python -m devcloud.faultproxy STATE_DIR` (stdlib only); it serves every service of that
cloud from one process, one thread per connection. The Host header is passed through unchanged,
so services build their self links with the public (proxied) port.
"""

from __future__ import annotations

import fcntl
import http.client
import io
import json
import logging
import os
import socket
import struct
import sys
import termios
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devcloud import faults
from devcloud.context import CloudContext

log = logging.getLogger("devcloud.faultproxy")

BLOCK = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
                        "expect"})  # the proxy answered `Expect: 100-continue` itself
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           409: "Conflict", 413: "Request Entity Too Large", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}
#: Nova's and Cinder's fault wrappers name the body's top key after the status.
FAULT_KEYS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
              405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
              429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable"}


def error_body(service: str, status: int, message: str) -> dict:
    """An error body shaped like the one the real service returns for this status."""
    reason = REASONS.get(status, http.client.responses.get(status, "Error"))
    if service == "keystone":
        return {"error": {"code": status, "title": reason, "message": message}}
    if service in ("nova", "cinder"):
        return {FAULT_KEYS.get(status, "computeFault"): {"code": status, "message": message}}
    if service == "neutron":
        return {"NeutronError": {"type": "HTTP" + reason.replace(" ", ""), "message": message,
                                 "detail": ""}}
    return {"message": message, "code": f"{status} {reason}", "title": reason}  # glance (webob)


def splice_exact(fp: io.BufferedReader, src: socket.socket, dst: socket.socket,
                 count: int) -> int:
    """Move `count` body bytes from `src` to `dst` without copying them through Python.

    `fp` is the buffered reader that parsed the headers from `src`: what it already holds goes
    first, the rest moves socket -> pipe -> socket with splice(2). Both sockets must be blocking.
    Returns the bytes moved (fewer if `src` closed early).
    """
    moved = 0
    buffered = fp.peek(1)[:count] if count > 0 else b""
    if buffered:
        fp.read(len(buffered))
        dst.sendall(buffered)
        moved = len(buffered)
    if moved >= count:
        return moved
    pipe_r, pipe_w = os.pipe()
    try:
        try:
            fcntl.fcntl(pipe_w, F_SETPIPE_SZ, BLOCK)
        except OSError:
            pass  # a smaller pipe still works, with more system calls
        while moved < count:
            n = os.splice(src.fileno(), pipe_w, min(BLOCK, count - moved))
            if n == 0:
                break
            moved += n
            while n:
                n -= os.splice(pipe_r, dst.fileno(), n)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
    return moved


class ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one request per connection (Connection: close, like the uWSGI services)."""

    protocol_version = "HTTP/1.1"
    service: str = ""
    backend: tuple[str, int] = ("127.0.0.1", 0)
    state_dir: Path = Path()

    def log_message(self, format: str, *args: object) -> None:  # `format` is the base class's parameter name
        pass  # per-request logging would cost more than the proxying

    def _dispatch(self) -> None:
        self.close_connection = True
        rule = faults.match(self.state_dir, self.service, self.command, self.path,
                            kinds=faults.HTTP_KINDS)
        if rule is not None:
            log.info("%s %s %s: applying fault %s %s", self.service, self.command, self.path,
                     rule.kind, rule.value)
        if rule is not None and rule.kind == "latency":
            time.sleep(rule.value)
        if rule is not None and rule.kind == "status":
            self._discard_body()
            self._send_error(int(rule.value), f"devcloud fault {rule.id}: injected "
                                              f"{int(rule.value)} for {self.service}")
            return
        drop_after = int(rule.value) if rule is not None and rule.kind == "drop" else None
        self._forward(drop_after)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    # ---- request body ------------------------------------------------------------------------
    def _body_chunks(self):
        """The request body as blocks (Content-Length or chunked), read with large buffers."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, BLOCK))
                    if not data:
                        raise ConnectionError("client closed mid-body")
                    remaining -= len(data)
                    yield data
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        buf = bytearray(min(remaining, BLOCK) or 1)
        view = memoryview(buf)
        while remaining:
            n = self.rfile.readinto1(view[:min(remaining, BLOCK)])
            if not n:
                raise ConnectionError("client closed mid-body")
            remaining -= n
            yield view[:n]

    def _discard_body(self) -> None:
        for _ in self._body_chunks():
            pass

    # ---- responses ---------------------------------------------------------------------------
    def _send_error(self, status: int, message: str) -> None:
        body = json.dumps(error_body(self.service, status, message)).encode()
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, drop_after: int | None) -> None:
        conn = http.client.HTTPConnection(*self.backend, timeout=600)
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    conn.putheader(key, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sock.settimeout(None)  # splice(2) needs blocking sockets
            length = int(self.headers.get("Content-Length") or 0)
            if (not chunked and length > BLOCK
                    and splice_exact(self.rfile, self.connection, conn.sock,  # type: ignore[arg-type]  # a BufferedReader
                                     length) != length):
                raise ConnectionError("client closed mid-body")
            for block in ([] if not chunked and length > BLOCK else self._body_chunks()):
                if chunked:
                    conn.send(b"%x\r\n" % len(block) + bytes(block) + b"\r\n")
                else:
                    conn.send(block)
            if chunked:
                conn.send(b"0\r\n\r\n")
            upstream = conn.sock  # getresponse() drops conn.sock when the answer says close
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._send_error(502, f"devcloud fault proxy: {self.service} at "
                                  f"{self.backend[0]}:{self.backend[1]} is unreachable ({exc})")
            return
        try:
            self._relay(resp, upstream, drop_after)
        finally:
            conn.close()

    def _relay(self, resp: http.client.HTTPResponse, upstream: socket.socket,
               drop_after: int | None) -> None:
        self.send_response_only(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD" or resp.status in (204, 304):
            return
        if resp.length is not None and not resp.chunked and resp.fp is not None:
            count = resp.length if drop_after is None else min(resp.length, drop_after)
            self.connection.settimeout(None)
            splice_exact(resp.fp, upstream, self.connection, count)
            if drop_after is not None:
                self._abort()
            return
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        sent = 0
        while True:
            n = resp.readinto(view)
            if not n:
                break
            if drop_after is not None and sent + n >= drop_after:
                self.wfile.write(view[:max(0, drop_after - sent)])
                self._abort()
                return
            self.wfile.write(view[:n])
            sent += n
        if drop_after is not None:
            self._abort()  # the body was shorter than N: still drop, as asked

    def _abort(self) -> None:
        """Reset the connection (RST, not a clean FIN) as a network failure would."""
        self.wfile.flush()
        # Let the N bytes reach the client first: a reset discards data still in the send queue.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            queued = fcntl.ioctl(self.connection.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            if struct.unpack("i", queued)[0] == 0:
                break
            time.sleep(0.005)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def serve(state_dir: Path) -> None:
    ctx = CloudContext.load(state_dir)
    servers = []
    for service in faults.SERVICES:
        handler = type(f"{service.title()}Proxy", (ProxyHandler,), {
            "service": service, "backend": (ctx.host, ctx.port(service)),
            "state_dir": ctx.state_dir})
        server = ProxyServer((ctx.host, ctx.ports[service]), handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, name=service, daemon=True).start()
        log.info("proxy %s: %s -> %s", service, ctx.public_url(service), ctx.url(service))
    threading.Event().wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if len(sys.argv) != 2:
        sys.exit("usage: python -m devcloud.faultproxy STATE_DIR")
    serve(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
