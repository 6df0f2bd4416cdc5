"""Processes of a dev cloud are found and stopped by pid and marker, never by name."""

from __future__ import annotations

import subprocess
import sys
import time

from devcloud import processes


def test_stop_all_stops_spawned_and_orphaned_processes(tmp_path):
    state = tmp_path.resolve()
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    spawned = processes.spawn(state, "sleeper", sleeper)
    orphan = processes.spawn(state, "orphan", sleeper)
    (state / "run" / "orphan.pid").unlink()  # as after a crash that lost its pid file
    assert processes.running_pid(state, "sleeper") == spawned
    deadline = time.monotonic() + 10  # /proc shows a child's own environment only once it has exec'd
    while not {spawned, orphan} <= processes.marked_pids(state) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {spawned, orphan} <= processes.marked_pids(state)

    stopped = processes.stop_all(state)

    assert "sleeper" in stopped
    assert not processes.marked_pids(state)
    assert processes.running_pid(state, "sleeper") is None


def test_a_reused_pid_is_not_ours(tmp_path):
    """A pid file naming an unrelated live process (pid reuse) is ignored, not killed."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "stale.pid").write_text(f"{other.pid}\n")
        assert processes.running_pid(tmp_path.resolve(), "stale") is None
        processes.stop_all(tmp_path.resolve())
        time.sleep(0.2)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
