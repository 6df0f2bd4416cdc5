"""Spawning and stopping the dev cloud's processes, by pid, never by name.

Every process we spawn carries `DEVCLOUD_STATE_DIR=<state dir>` in its environment (children such
as uWSGI workers and QEMU guests inherit it). Before signalling a pid from a pid file we check that
marker (or the state dir on its command line), so a pid reused by an unrelated process after a
crash or reboot is never killed; the same marker finds orphans whose pid file is gone.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

MARKER = "DEVCLOUD_STATE_DIR"


def _pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / "run" / f"{name}.pid"


def _log_file(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def spawn(state_dir: Path, name: str, argv: list[str], env: dict[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start `argv` in its own session (so its whole process group can be stopped), detached."""
    (state_dir / "run").mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ if env is None else env)
    full_env[MARKER] = str(state_dir)
    with open(_log_file(state_dir, name), "ab") as log:
        proc = subprocess.Popen(
            [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=full_env, cwd=str(cwd or state_dir), start_new_session=True, close_fds=True)
    start = start_time(proc.pid)
    if start is not None:
        _pid_file(state_dir, name).with_suffix(".start").write_text(f"{start}\n")
    _pid_file(state_dir, name).write_text(f"{proc.pid}\n")
    return proc.pid


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, names one process for good."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def log_tail(state_dir: Path, name: str, lines: int = 30) -> str:
    path = _log_file(state_dir, name)
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not running; reap it if it is our child
        if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return False
    except (OSError, IndexError):
        return False
    return True


def belongs_to(pid: int, state_dir: Path) -> bool:
    """True if `pid` is a live process of the cloud in `state_dir` (env marker or cmdline)."""
    if not _alive(pid):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"{MARKER}={state_dir}".encode() in environ:
            return True
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(state_dir).encode() in cmdline


def running_pid(state_dir: Path, name: str) -> int | None:
    path = _pid_file(state_dir, name)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:  # spawned by us: the recorded start time identifies it without reading its environment
        recorded = int(path.with_suffix(".start").read_text())
    except (OSError, ValueError):
        return pid if belongs_to(pid, state_dir) else None
    return pid if _alive(pid) and start_time(pid) == recorded else None


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def marked_pids(state_dir: Path) -> set[int]:
    """Every live process carrying this state dir's marker (finds orphans of a crashed run)."""
    needle = f"{MARKER}={state_dir}".encode()
    found: set[int] = set()
    spare = _ancestors()  # `devcloud down` run from a process of the cloud must not kill its caller
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def stop_all(state_dir: Path, timeout: float = 15, keep: Collection[str] = ()) -> list[str]:
    """Stop every process of this cloud: pid files under <state>/run (any depth), then orphans.

    SIGTERM to each process group first (uWSGI runs with die-on-term), SIGKILL what is left after
    `timeout`. Returns the names of what was stopped, for the log. `keep` names processes (pid
    file names) to leave running with their pid files, for a caller that stops them afterwards.
    """
    run_dir = state_dir / "run"
    targets: dict[int, str] = {}
    kept = {running_pid(state_dir, name) for name in keep} - {None}
    pid_files = sorted(run_dir.rglob("*.pid")) if run_dir.exists() else []
    pid_files = [p for p in pid_files if str(p.relative_to(run_dir).with_suffix("")) not in keep]
    for path in pid_files:
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        name = str(path.relative_to(run_dir).with_suffix(""))
        if pid not in _ancestors() and (running_pid(state_dir, name) == pid
                                        or belongs_to(pid, state_dir)):
            targets[pid] = str(path.relative_to(run_dir).with_suffix(""))
    for pid in marked_pids(state_dir) - kept:
        targets.setdefault(pid, f"pid {pid}")

    def signal_all(sig: int) -> None:
        for pid in targets:
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in targets):
        time.sleep(0.1)
    if any(_alive(p) for p in targets):
        signal_all(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in targets):
            time.sleep(0.1)
    for path in pid_files:
        path.unlink(missing_ok=True)
        path.with_suffix(".start").unlink(missing_ok=True)
    return sorted(set(targets.values()))


def claim_slot(root: Path, prefix: str, slots: int = 8) -> tuple[Path, IO[str]]:
    """The first `<root>/<prefix>-<N>` no running test session holds, locked (flock) for this one.

    Numbered slots keep unix socket paths short and let a later session find a crashed one's
    leftovers; the returned file keeps the lock until it is closed.
    """
    root.mkdir(parents=True, exist_ok=True)
    for n in range(slots):
        lock = open(root / f"{prefix}-{n}.lock", "w")  # noqa: SIM115 - returned, holding the lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return (root / f"{prefix}-{n}").resolve(), lock
    raise RuntimeError(f"all {slots} {prefix} slots under {root} are held by running test sessions; "
                       "wait for one to end")


@contextmanager
def stopped_at_exit(stop: Callable[[], None]) -> Iterator[None]:
    """Run `stop` when the block ends, also when the interpreter exits without ending it or the
    session gets SIGTERM (turned into SystemExit so that `finally` blocks run)."""
    atexit.register(stop)
    previous = signal.getsignal(signal.SIGTERM)
    own_handler = previous in (signal.SIG_DFL, None)
    if own_handler:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        stop()
        atexit.unregister(stop)
        if own_handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
