"""`make demo` against the session's dev cloud with real QEMU guests: data written inside the guests
is read back, byte for byte, from inside the servers restored from the Incremental."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.devcloud, pytest.mark.guest, pytest.mark.slow, pytest.mark.timeout(1500)]
DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_demo_reads_guest_data_back_from_restored_servers(devcloud, tmp_path):
    if devcloud.ctx.fast:
        pytest.skip("needs real guests: run without DEVCLOUD_FAST")
    env = {**os.environ, "DEMO_CLOUD": str(devcloud.state_dir), "DEMO_DIR": str(tmp_path / "demo")}
    out = subprocess.run([sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=1500)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "every byte read back from the restored guests is right" in text
    reads = [line for line in text.splitlines() if "-restored reads " in line]
    assert len(reads) == 3 and all(line.endswith("' OK") for line in reads), reads  # two roots, one volume
    assert "Consistency:      application" in text and "Consistency:      crash" in text
    assert "no leftovers of stackvault jobs in the cloud" in text  # the demo's own `cleanup --dry-run`
