"""SIGTERM or Ctrl-C during `files get` of a large file leaves nothing behind: no `NAME.partial`, no
appliance, no export socket directory; the command ends as interrupted (exit 130).

The file is a sparse 32 GiB one, whose zeros the appliance sends for minutes: the signal always
lands mid-extraction. `slow`: the appliance starts under QEMU TCG.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .guest_disks import GuestStackvault, ext4_image, leftovers, sparse_file
from .helpers import MIB

pytestmark = pytest.mark.slow

HUGE = 32 << 30


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("signals")
    sparse_file(tmp / "tree" / "huge.img", HUGE, {0: os.urandom(MIB)})
    sv = GuestStackvault(tmp / "sv")
    sv.init("64KiB")
    return {"sv": sv, "backup": sv.backup(ext4_image(tmp / "tree", tmp / "disk.raw", 32 * MIB))["backup_id"]}


def _wait_for(what: str, check, proc: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {seconds:.0f} s")
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_extraction_leaves_nothing(world: dict, tmp_path: Path, signum: signal.Signals) -> None:
    sv = world["sv"]
    before = leftovers(sv)
    partial = tmp_path / "huge.img.partial"
    proc = sv.popen("files", world["backup"], "get", "/huge.img", "--to", str(tmp_path))
    try:
        _wait_for("data in the partial file", lambda: partial.exists() and partial.stat().st_blocks > 0, proc, 300)
        os.kill(proc.pid, signum)  # the command alone, as systemd or a terminal would
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert os.listdir(tmp_path) == [], "the partial extraction is removed"
    deadline = time.monotonic() + 30  # the appliance's QEMU is reaped as the command ends
    while leftovers(sv) != before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leftovers(sv) == before, "no appliance or socket directory is left"
