"""`make demo` against the session's dev cloud with real QEMU guests and Ceph: data written inside the
guests is read back, byte for byte, from inside the servers restored from the Incremental; the server
booted from an RBD volume has its Incremental read only what changed; the guests with stackvault's
fsfreeze hook have their freeze proven; `stackvault server` takes a policy's first scheduled run, which
`stackvault jobs` and the metrics endpoint show, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.devcloud, pytest.mark.guest, pytest.mark.slow, pytest.mark.timeout(1500)]
DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def size(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def test_demo_reads_guest_data_back_from_restored_servers(devcloud_ceph, tmp_path):
    if devcloud_ceph.ctx.fast:
        pytest.skip("needs real guests: run without DEVCLOUD_FAST")
    env = {**os.environ, "DEMO_CLOUD": str(devcloud_ceph.state_dir), "DEMO_DIR": str(tmp_path / "demo")}
    out = subprocess.run([sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=1500)
    text = out.stdout + out.stderr
    api_pid = tmp_path / "demo" / "api.pid"  # the API with the dashboard, left running for the demo's user
    if api_pid.exists():
        os.killpg(int(api_pid.read_text()), signal.SIGTERM)
    assert out.returncode == 0, text[-4000:]
    assert re.search(r"^the dashboard: http://127\.0\.0\.1:\d+/dashboard/$", text, re.M), text[-4000:]
    assert re.search(r"^  log in as user demo-viewer, password \S+, project admin ", text, re.M), text[-4000:]
    assert "every byte read back from the restored guests is right" in text
    reads = [line for line in text.splitlines() if "-restored reads " in line]
    assert len(reads) == 3 and all(line.endswith("' OK") for line in reads), reads  # two roots, one volume
    assert "Consistency:      application (verified)" in text and "Consistency:      crash" in text
    # Both guests with the hook, in the Full and in the Incremental.
    assert text.count("Quiesce proof:    verified") == 4, text[-6000:]
    assert "Quiesce proof:    missing" not in text and "Quiesce proof:    stale" not in text
    # The server on Ceph: its Incremental took the changed-block path and read a sliver of the 1 GiB disk.
    rbd = re.findall(r"demo-db vda on Ceph \(changed_blocks\): read (\S+ \S+) of a (\S+ \S+) disk", text)
    assert len(rbd) == 1, text[-6000:]
    read, disk = (size(s) for s in rbd[0])
    assert disk == 1 << 30 and read < disk / 20, rbd
    assert "no leftovers of stackvault jobs in the cloud" in text  # the demo's own `cleanup --dry-run`
    # The last act: the policy's first scheduled run, as the server ran it and an operator sees it.
    lines = text.splitlines()
    assert re.search(r"^the first scheduled run ended: (success|warning) ", text, re.M), text[-6000:]
    assert re.search(r"^\S+ +policy +(success|warning) .* demo ", text, re.M), text[-6000:]  # the jobs table
    for metric in ("timestamp_seconds", "read_bytes", "stored_bytes", "consistency"):
        line = rf"^  stackvault_backup_last_success_{metric}{{.*name=\"demo-web\".*}} \S+$"
        assert re.search(line, text, re.M), metric
    assert "SIGTERM: the server exited 0; its last line: stackvault server stopped after finishing 1 run" in lines
