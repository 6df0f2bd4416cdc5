"""Where a stackvault phase spends its time: a sampling profile of all its threads, summarised.

py-spy samples every thread (cProfile sees only the main thread, and the engine's work happens in
worker threads), including time inside C code that released the GIL (BLAKE3, zstd, reads).
Samples are taken with `--idle`, so a thread blocked on a queue or a read is visible as waiting;
the summary splits each thread's samples into working and waiting, then lists the functions where
working samples end (self time) and the ones they pass through (inclusive time).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter

# A leaf frame that means "blocked": on a lock, a queue, a future, a selector or a sleep. An
# executor's `_worker` as the leaf is blocked in its queue's C-level get.
WAITING_METHODS = {"wait", "acquire", "get", "put", "sleep", "select", "poll", "join", "result",
                   "_wait_for_tstate_lock", "_worker"}
WAITING_FILES = {"threading.py", "queue.py", "thread.py", "_base.py", "selectors.py", "subprocess.py"}


def _is_waiting(leaf: str) -> bool:
    """Blocked in the standard library's synchronisation, not in our own `get` that reads a file."""
    m = FRAME.match(leaf)
    if not m:
        return False
    return (m["func"].rsplit(".", 1)[-1] in WAITING_METHODS
            and m["file"].replace("\\", "/").rsplit("/", 1)[-1] in WAITING_FILES)
FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    """py-spy beside the running interpreter (installed into the venv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


def record(argv: list[str], out_path: str, env: dict[str, str] | None = None, rate: int = 97,
           log=None) -> bool:
    """Run `argv` under py-spy, writing collapsed stacks to `out_path`. False if py-spy is missing."""
    spy = py_spy()
    if not spy:
        return False
    cmd = [spy, "record", "--format", "raw", "--threads", "--idle", "--subprocesses", "--full-filenames",
           "-r", str(rate), "-o", out_path, "--", *argv]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"profiled command failed ({proc.returncode}): {' '.join(argv)}")
    return True


def _short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"].replace("\\", "/")
    file = "stackvault/" + file.split("/stackvault/", 1)[1] if "/stackvault/" in file else file.rsplit("/", 1)[-1]
    return f"{m['func']} ({file})"


def summarise(path: str, top: int = 15) -> str:
    """A plain-text summary of a collapsed-stack file: per thread, then hottest functions."""
    threads: Counter[str] = Counter()
    thread_wait: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            thread = frames[0]
            if thread.startswith("process "):  # --subprocesses prefixes the process
                frames = frames[1:]
                thread = frames[0] if frames else thread
            thread = re.sub(r"^thread \(0x[0-9a-fA-F]+\): |^thread \(\d+\): ", "", thread)
            thread = re.sub(r"[-_]\d+\b", "-N", thread)
            calls = [_short(x) for x in frames[1:]]
            total += n
            threads[thread] += n
            leaf = calls[-1] if calls else "?"
            if frames[1:] and _is_waiting(frames[-1]):
                thread_wait[thread] += n
                continue
            self_time[leaf] += n
            for c in set(calls):
                if "stackvault/" in c:
                    inclusive[c] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (all threads, waiting included)", "", "threads: samples, of which waiting"]
    for t, n in threads.most_common():
        lines.append(f"  {n:6d}  {100 * n / total:5.1f}%  waiting {100 * thread_wait[t] / n:5.1f}%  {t}")
    working = sum(self_time.values()) or 1
    lines += ["", f"self time of working samples ({working} samples):"]
    for func, n in self_time.most_common(top):
        lines.append(f"  {100 * n / working:5.1f}%  {func}")
    lines += ["", "inclusive time of working samples, stackvault functions:"]
    for func, n in inclusive.most_common(top):
        lines.append(f"  {100 * n / working:5.1f}%  {func}")
    return "\n".join(lines) + "\n"
