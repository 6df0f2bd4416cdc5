"""Fault injection around any backend, for tests: fail the Nth put, drop a get, slow every call.

It wraps the real driver *inside* the retry wrapper (Retrying(Faulty(S3))), so a test sees exactly
what a user would when a store misbehaves: injected transient faults are retried with backoff,
persistent ones surface as the clear error the engine reports. A fault spec string (`parse`) lets
a test hand faults to a `stackvault` process it starts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import RepositoryError
from .base import Backend, BackendWrapper, ObjectInfo, TransientError

OPS = ("put", "get", "exists", "delete", "list")
#: transient: a dropped connection or 5xx (retried); permanent: a refusal (not retried);
#: missing: the object is not there (get raises KeyError, exists is False); slow: delay, then call.
KINDS = ("transient", "permanent", "missing", "slow")


@dataclass
class Fault:
    """Calls of `op` on keys starting with `prefix`: the `nth` such call and `count` after it fault
    (`count` None: every one from the `nth` on)."""

    op: str
    kind: str
    nth: int = 1
    count: int | None = 1
    prefix: str = ""
    seconds: float = 0.0
    seen: int = 0  # matching calls so far
    fired: int = 0  # faults injected so far

    def __post_init__(self) -> None:
        if self.op not in OPS or self.kind not in KINDS:
            raise ValueError(f"fault {self.op}:{self.kind}: op must be one of {OPS}, "
                             f"kind one of {KINDS}")


def parse(spec: str) -> list[Fault]:
    """`put:transient:nth=3:count=2;get:slow:seconds=0.5;put:permanent:prefix=chunks/:count=*`."""
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        op, kind, *options = item.split(":")
        fields: dict[str, object] = {}
        for option in options:
            name, _, value = option.partition("=")
            if name in ("nth",):
                fields[name] = int(value)
            elif name == "count":
                fields[name] = None if value == "*" else int(value)
            elif name == "seconds":
                fields[name] = float(value)
            elif name == "prefix":
                fields[name] = value
            else:
                raise ValueError(f"unknown fault option {name!r} in {item!r}")
        faults.append(Fault(op, kind, **fields))  # type: ignore[arg-type]  # each converted above
    return faults


class FaultyBackend(BackendWrapper):
    def __init__(self, inner: Backend, faults: list[Fault] | None = None) -> None:
        super().__init__(inner)
        self.faults = list(faults or [])
        self._lock = threading.Lock()

    def add(self, op: str, kind: str, **options: object) -> Fault:
        fault = Fault(op, kind, **options)  # type: ignore[arg-type]  # a test's fields of Fault
        with self._lock:
            self.faults.append(fault)
        return fault

    def _inject(self, op: str, key: str) -> str | None:
        """The kind of fault this call gets (after sleeping for a slow one), or None."""
        chosen = None
        with self._lock:
            for fault in self.faults:
                if fault.op != op or not key.startswith(fault.prefix):
                    continue
                fault.seen += 1
                if fault.seen >= fault.nth and (fault.count is None or fault.fired < fault.count):
                    fault.fired += 1
                    chosen = fault
                    break
        if chosen is None:
            return None
        if chosen.kind == "slow":
            time.sleep(chosen.seconds)
            return None
        if chosen.kind == "transient":
            raise TransientError(f"injected fault: {op} {key} in {self.location} dropped",
                                 "this is a test fault")
        if chosen.kind == "permanent":
            raise RepositoryError(f"injected fault: {op} {key} in {self.location} refused",
                                  "this is a test fault")
        return chosen.kind

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self._inject("put", key)
        self.inner.put(key, data)

    def get(self, key: str, max_size: int | None = None) -> bytes:
        if self._inject("get", key) == "missing":
            raise KeyError(key)
        return self.inner.get(key, max_size)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if self._inject("get", key) == "missing":
            raise KeyError(key)
        return self.inner.get_range(key, offset, length)

    def exists(self, key: str) -> bool:
        if self._inject("exists", key) == "missing":
            return False
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self._inject("delete", key)
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        if self._inject("list", prefix) == "missing":
            return iter(())
        return self.inner.list(prefix)
