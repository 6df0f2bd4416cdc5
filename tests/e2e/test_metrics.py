"""Prometheus metrics as an operator scrapes them: the catalog's numbers, as a node_exporter textfile
and on /metrics, after real backups, a refused backup and verifies."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import MIB, Stackvault, announced, one_error, write_at

Samples = dict[tuple[str, frozenset], float]


def _samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, f"{name}{labels}: {len(found)} series in\n" + "\n".join(
        f"{n} {dict(ls)} {v}" for (n, ls), v in sorted(samples.items(), key=str) if n == name)
    return found[0]


def _labels(samples: Samples, name: str, **labels: str) -> dict[str, str]:
    found = [dict(ls) for (n, ls), _ in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def _foreign_gc_lock(repo: Path, seconds: float) -> Path:
    """Another proxy's gc holding the repository's exclusive lock: a backup now is refused."""
    (repo / "locks").mkdir(exist_ok=True)
    lock = repo / "locks" / f"{int(time.time())}-0badc0de.json"
    lock.write_text(json.dumps({"kind": "exclusive", "host": "proxy-az2.invalid", "pid": 1, "job": "gc",
                                "expires": time.time() + seconds}))
    return lock


@pytest.mark.slow
def test_textfile_holds_each_disks_last_backup_its_failures_and_the_verify_results(
        repo: Stackvault, rng: random.Random, tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for img in (a, b):
        img.write_bytes(rng.randbytes(2 * MIB))
    repo.backup(a, level="full")
    write_at(a, 0, rng.randbytes(64 << 10))
    last = repo.backup(a)
    lock = _foreign_gc_lock(repo.repo, 600)
    refused = repo.run("backup", "--source", f"file:{b}", expect=None)
    assert refused.rc != 0, refused.describe()
    lock.unlink()
    repo.run("verify")

    prom_dir = tmp_path / "textfile"
    prom_dir.mkdir()
    out = prom_dir / "stackvault.prom"
    repo.run("metrics", "--textfile", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644, "node_exporter (another user) must be able to read it"
    assert sorted(p.name for p in prom_dir.iterdir()) == ["stackvault.prom"], "a temporary file was left"
    samples = _samples(out.read_text())

    disk_a = {"kind": "disk", "id": f"file:{os.path.realpath(a)}"}
    finished = _value(samples, "stackvault_backup_last_success_timestamp_seconds", **disk_a)
    assert abs(finished - time.time()) < 600, finished
    assert _value(samples, "stackvault_backup_last_success_read_bytes", **disk_a) == last["bytes_read"]
    assert _value(samples, "stackvault_backup_last_success_stored_bytes", **disk_a) == last["bytes_stored"]
    assert _value(samples, "stackvault_backup_last_success_duration_seconds", **disk_a) == last["duration_s"]
    assert _labels(samples, "stackvault_backup_last_success_info", **disk_a)["level"] == "incremental"
    assert _value(samples, "stackvault_catalog_up") == 1
    # The refused backup: counted against its disk, which never had a successful one.
    disk_b = {"kind": "disk", "id": f"file:{os.path.realpath(b)}"}
    assert _value(samples, "stackvault_backup_failures_total", **disk_b) == 1
    assert abs(_value(samples, "stackvault_backup_last_failure_timestamp_seconds", **disk_b) - time.time()) < 600
    assert not [k for k in samples if k[0] == "stackvault_backup_last_success_timestamp_seconds"
                and ("id", disk_b["id"]) in k[1]]
    assert _value(samples, "stackvault_jobs_total", kind="backup", status="failed") == 1
    assert _value(samples, "stackvault_jobs_total", kind="backup", status="success") == 2
    assert _value(samples, "stackvault_verify_last_damaged_objects") == 0
    assert _value(samples, "stackvault_verify_last_timestamp_seconds", deep="false") >= finished

    # A damaged chunk: the next deep verify's count says so.
    victim = sorted((repo.repo / "chunks").rglob("*"), key=str)[-1]
    assert victim.is_file(), victim
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert repo.run("verify", "--deep", expect=None).rc == 3
    repo.run("metrics", "--textfile", out)
    samples = _samples(out.read_text())
    assert _value(samples, "stackvault_verify_last_damaged_objects") >= 1
    assert _value(samples, "stackvault_verify_last_timestamp_seconds", deep="true") > 0


def test_listen_serves_what_the_catalog_holds_at_each_scrape(repo: Stackvault, rng: random.Random,
                                                              tmp_path: Path) -> None:
    img = tmp_path / "a.img"
    img.write_bytes(rng.randbytes(1 * MIB))
    repo.backup(img, level="full")
    server = subprocess.Popen(repo.argv(["metrics", "--listen", "127.0.0.1:0"], json_out=False),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=repo.env())
    try:
        match = announced(server, r"http://127\.0\.0\.1:(\d+)/metrics")
        url = f"http://127.0.0.1:{match.group(1)}/metrics"

        def scrape() -> Samples:
            with urllib.request.urlopen(url, timeout=30) as resp:
                assert resp.status == 200
                return _samples(resp.read().decode())

        assert _value(scrape(), "stackvault_backups") == 1
        repo.backup(img)  # no restart: the next scrape reads the catalog again
        samples = scrape()
        assert _value(samples, "stackvault_backups") == 2
        assert _labels(samples, "stackvault_backup_last_success_info", kind="disk")["level"] == "incremental"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_bad_metrics_options_are_one_error_line(repo: Stackvault, tmp_path: Path) -> None:
    one_error(repo.run("metrics", "--textfile", tmp_path / "stackvault.txt", expect=None), ".prom", rc=2)
    one_error(repo.run("metrics", "--textfile", tmp_path / "no" / "x.prom", expect=None), "does not exist", rc=2)
    one_error(repo.run("metrics", "--listen", "localhost", expect=None), "HOST:PORT", rc=2)
    one_error(repo.run("metrics", expect=None), "--textfile", rc=2)
