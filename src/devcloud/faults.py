"""Fault rules: what should go wrong, where, and how many times.

Rules live in `<state>/faults.json` so the CLI (`devcloud fault add`), a test, the fault proxy and
emulated Nova (another process) all see the same list. `match` consumes one use of a counted rule
under an exclusive file lock, so "fail twice, then succeed" holds even with concurrent requests.

Kinds: `status` (answer with this HTTP status and the service's error body), `latency` (delay the
request by `value` seconds), `drop` (cut the connection after `value` bytes of the response body)
are applied by the fault proxy; `hang-snapshot` and `quota-exceeded` are applied by Nova.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

SERVICES = ("keystone", "glance", "cinder", "nova", "neutron")
HTTP_KINDS = frozenset({"status", "latency", "drop"})
NOVA_KINDS = frozenset({"hang-snapshot", "quota-exceeded"})
KINDS = HTTP_KINDS | NOVA_KINDS


@dataclass
class FaultRule:
    """One fault. `count` None means every matching request; otherwise uses left."""

    service: str
    kind: str
    value: float = 0
    method: str | None = None
    path_regex: str | None = None
    count: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def matches(self, service: str, method: str, path: str) -> bool:
        if self.service != service or self.count == 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.path_regex or re.search(self.path_regex, path) is not None


def _path(state_dir: Path) -> Path:
    return Path(state_dir) / "faults.json"


@contextmanager
def _locked(state_dir: Path) -> Iterator[list[FaultRule]]:
    """The rule list under an exclusive lock; changes made to it are written back."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(state_dir) / "faults.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = _path(state_dir)
        rules = [FaultRule(**r) for r in json.loads(path.read_text())] if path.exists() else []
        before = [asdict(r) for r in rules]
        yield rules
        after = [asdict(r) for r in rules]
        if after != before:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(after, indent=2) + "\n")
            os.replace(tmp, path)


def add(state_dir: Path, rule: FaultRule) -> FaultRule:
    """Store a rule (validated) and return it."""
    if rule.service not in SERVICES:
        raise ValueError(f"unknown service {rule.service!r}; use one of {', '.join(SERVICES)}")
    if rule.kind not in KINDS:
        raise ValueError(f"unknown fault kind {rule.kind!r}; use one of {', '.join(sorted(KINDS))}")
    if rule.path_regex:
        re.compile(rule.path_regex)
    with _locked(state_dir) as rules:
        rules.append(rule)
    return rule


def clear(state_dir: Path, service: str | None = None) -> int:
    """Remove all rules (or those of one service); returns how many were removed."""
    with _locked(state_dir) as rules:
        keep = [r for r in rules if service is not None and r.service != service]
        removed = len(rules) - len(keep)
        rules[:] = keep
    return removed


def list_rules(state_dir: Path) -> list[FaultRule]:
    path = _path(state_dir)
    return [FaultRule(**r) for r in json.loads(path.read_text())] if path.exists() else []


def match(state_dir: Path, service: str, method: str, path: str,
          kinds: frozenset[str] | set[str] | None = None) -> FaultRule | None:
    """The first rule of `kinds` (default: any) matching this request, consuming one use.

    Cheap when no rule exists (no lock taken), since the proxy calls it for every request.
    """
    try:  # unlocked first look: most requests match nothing and need no lock
        unlocked = json.loads(_path(state_dir).read_text())
    except (OSError, ValueError):
        unlocked = None
    if unlocked is not None and not any(
            (kinds is None or r["kind"] in kinds) and FaultRule(**r).matches(service, method, path)
            for r in unlocked):
        return None
    if not _path(state_dir).exists():
        return None
    with _locked(state_dir) as rules:
        for rule in rules:
            if (kinds is None or rule.kind in kinds) and rule.matches(service, method, path):
                if rule.count is not None:
                    rule.count -= 1
                return FaultRule(**asdict(rule))
    return None
