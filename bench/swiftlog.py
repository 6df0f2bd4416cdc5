"""What a client asked of the Swift proxy, read from the proxy's access log: calls, bytes, overlap.

The benchmark counts requests on the server side rather than inside stackvault, so restic is
counted the same way, and nothing in the measured process changes. Swift's `proxy-logging` writes
one line per request with its start and end times (epoch seconds); the requests the client sent
have a client address, while the subrequests a middleware makes (s3api's container HEADs,
versioned_writes' checks) have `-` there and a `swift.source`, and are left out.

Peak concurrency is the largest number of the client's requests of one method whose
[start, end] intervals overlap; the mean is their summed duration over the span from the first
start to the last end (Little's law: the average number in flight).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Fields of Swift's default proxy access log line (after the "proxy-server: " tag); all are
# URL-quoted, so none holds a space.
_CLIENT_IP, _METHOD, _STATUS, _BYTES_RECVD, _BYTES_SENT, _SOURCE, _START, _END = 0, 3, 6, 10, 11, 16, 18, 19


@dataclass(frozen=True)
class Request:
    method: str
    status: int
    bytes_in: int  # request body (an upload)
    bytes_out: int  # response body (a download)
    start: float
    end: float


@dataclass
class Calls:
    """The client's requests of one method during one phase."""

    method: str
    requests: list[Request] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def bytes(self) -> int:
        return sum(r.bytes_in + r.bytes_out for r in self.requests)

    @property
    def mean_latency(self) -> float:
        return sum(r.end - r.start for r in self.requests) / self.count if self.requests else 0.0

    @property
    def peak_in_flight(self) -> int:
        events = sorted([(r.start, 1) for r in self.requests] + [(r.end, -1) for r in self.requests])
        peak = now = 0
        for _, step in events:  # at equal times an end (-1) sorts before a start: no false overlap
            now += step
            peak = max(peak, now)
        return peak

    @property
    def mean_in_flight(self) -> float:
        if not self.requests:
            return 0.0
        span = max(r.end for r in self.requests) - min(r.start for r in self.requests)
        return sum(r.end - r.start for r in self.requests) / span if span > 0 else 1.0


def parse(lines: list[str]) -> list[Request]:
    """The client's requests in proxy log lines; other lines (start-up messages, subrequests) skipped."""
    out = []
    for line in lines:
        if not line.startswith("proxy-server: "):
            continue
        f = line[len("proxy-server: "):].split()
        if len(f) <= _END or f[_CLIENT_IP] == "-" or f[_SOURCE] != "-":
            continue
        try:
            out.append(Request(f[_METHOD], int(f[_STATUS]), _int(f[_BYTES_RECVD]), _int(f[_BYTES_SENT]),
                               float(f[_START]), float(f[_END])))
        except ValueError:
            continue
    return out


def by_method(requests: list[Request]) -> dict[str, Calls]:
    calls: dict[str, Calls] = {}
    for r in requests:
        calls.setdefault(r.method, Calls(r.method)).requests.append(r)
    return calls


class LogTail:
    """The lines a log file gained since the last `take()` (the proxy appends, never rewrites)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = self._size()

    def _size(self) -> int:
        try:
            with open(self.path, "rb") as f:
                return f.seek(0, 2)
        except FileNotFoundError:
            return 0

    def take(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1  # a half-written last line waits for the next take
        self.offset += cut
        return data[:cut].decode(errors="replace").splitlines()


def _int(text: str) -> int:
    return 0 if text == "-" else int(text)
