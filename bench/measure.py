"""Running one benchmark phase and measuring it the same way for every tool.

Wall time, peak memory and CPU time of a command's whole process tree: a poller sums the resident
set of the command and all its descendants from /proc every 50 ms (a tool that forks helpers is
charged for them), and GNU time adds the kernel's own per-process maximum, which catches spikes
shorter than the poll interval. No psutil: /proc is enough and keeps the bench dependency-free.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class PhaseResult:
    tool: str
    phase: str
    wall_s: float
    peak_rss: int  # bytes: max of the polled tree sum and the kernel's per-process maximum
    cpu_s: float
    returncode: int
    load_1m: float = 0.0  # machine load when the phase started: others share the cores
    repo_bytes: int | None = None
    repo_apparent_bytes: int | None = None
    extra: dict = field(default_factory=dict)


class CommandFailed(RuntimeError):
    """A tool exited non-zero: the benchmark stops, since its numbers would mean nothing."""


def drop_caches() -> bool:
    """Flush dirty pages and drop the page cache, so every phase starts cold. False if not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: fields restart after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants right now."""
    kids = _children_map()
    total = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(kids.get(pid, ()))
    return total


def run_measured(tool: str, phase: str, argv: list[str], env: dict[str, str] | None = None,
                 cwd: str | None = None, log_path: str | None = None,
                 interval: float = 0.05) -> tuple[PhaseResult, bytes]:
    """Run `argv`, return its measurements and its stdout. Raises CommandFailed on a non-zero exit.

    stderr goes to `log_path` (progress output would otherwise be timed as terminal I/O).
    The command runs under GNU time when it is installed: the kernel's max RSS of the largest
    process of the tree, exact even for a spike between two polls. (The bench's own `wait4` cannot
    give that: a forked child is charged the bench's memory until it execs.)
    """
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    if log_path:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    rss_file = None
    if gnu_time:
        fd, rss_file = tempfile.mkstemp(prefix="bench-maxrss-")
        os.close(fd)
        argv = [gnu_time, "-f", "%M", "-o", rss_file, *argv]
    peak = 0
    load = os.getloadavg()[0]
    stop = threading.Event()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env, cwd=cwd)

    def poll() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(proc.pid))
            stop.wait(interval)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    chunks = []
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read(65536), b""):
        chunks.append(chunk)
    # wait4 rather than Popen.wait: it hands back the CPU time of the finished tree.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    poller.join()
    if log_path:
        log.close()
    kernel_max = 0
    if rss_file:
        with open(rss_file) as f:
            text = f.read().strip().splitlines()
        os.unlink(rss_file)
        if text and text[-1].isdigit():
            kernel_max = int(text[-1]) * 1024
    out = b"".join(chunks)
    result = PhaseResult(tool=tool, phase=phase, wall_s=wall, peak_rss=max(peak, kernel_max),
                         cpu_s=usage.ru_utime + usage.ru_stime, returncode=proc.returncode,
                         load_1m=load)
    if proc.returncode != 0:
        where = f" (see {log_path})" if log_path else ""
        raise CommandFailed(f"{tool} {phase} failed with exit code {proc.returncode}: "
                            f"{' '.join(argv)}{where}")
    return result, out


def dir_size(path: str) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of everything under `path`, as `du` and `du -b` count."""
    allocated = apparent = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def file_allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def file_digest(path: str) -> str:
    """BLAKE3 of a whole file (holes read as zeros), multithreaded: used to check restores."""
    import blake3

    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if os.path.getsize(path):
        h.update_mmap(path)
    return h.hexdigest()
