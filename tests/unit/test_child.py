"""The launcher of the proxy's helper programs (qemu-img, qemu-nbd, debugfs): no secret reaches them,
and what they print, how long they run and how much memory they take are bounded."""

from __future__ import annotations

import sys
import time

import pytest

from stackvault.engine import child

SECRETS = {"STACKVAULT_PASSPHRASE": "correct horse battery staple", "OS_PASSWORD": "cloud-password",
           "OS_APPLICATION_CREDENTIAL_SECRET": "app-cred", "AWS_SECRET_ACCESS_KEY": "s3-key", "ST_KEY": "swift-key",
           "STACKVAULT_CATALOG": "postgresql://u:pw@db/sv"}


def test_a_helper_sees_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    out = child.run(["env"])
    assert out.returncode == 0 and not out.problem
    seen = dict(line.split("=", 1) for line in out.stdout.decode().splitlines() if "=" in line)
    assert not set(seen) & set(SECRETS)
    assert not set(seen.values()) & set(SECRETS.values())
    assert "PATH" in seen


def test_output_past_the_cap_stops_the_helper() -> None:
    started = time.monotonic()
    flood = child.run(["cat", "/dev/zero"], child.Limits(output=1 << 20, timeout_s=30))
    assert flood.truncated and len(flood.stdout) == 1 << 20
    assert "size limit" in flood.problem
    assert time.monotonic() - started < 30


def test_a_helper_past_its_time_is_stopped() -> None:
    started = time.monotonic()
    slow = child.run(["sleep", "30"], child.Limits(timeout_s=0.5))
    assert slow.timed_out and "too long" in slow.problem
    assert time.monotonic() - started < 10


def test_memory_and_cpu_limits_hold() -> None:
    greedy = child.run([sys.executable, "-c", "b = bytearray(1 << 30)"], child.Limits(memory=512 << 20))
    assert greedy.returncode != 0, "the address-space limit holds"
    spinning = child.run([sys.executable, "-c", "while True: pass"], child.Limits(cpu_s=1, timeout_s=30))
    assert spinning.returncode < 0 and not spinning.timed_out, "the CPU limit stops it, not the timeout"
