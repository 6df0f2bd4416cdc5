"""Launching the proxy's helper programs (qemu-img, qemu-nbd, debugfs) on bytes a tenant controls.

The proxy reads every project's disks and holds every project's credentials, and these programs parse
image headers and file systems that a guest wrote. So each one runs constrained, the way OpenStack
runs `qemu-img info` since its image-probing CVEs:

- an environment that holds no secret: only the variables below are passed on, never the
  passphrase, cloud passwords or store keys;
- resource limits (address space, CPU time, no core dumps), so a crafted image cannot exhaust the
  proxy for everyone;
- its output read up to a cap and a wall-clock timeout, after which it is killed;
- death with its parent (PR_SET_PDEATHSIG): a killed backup leaves no `qemu-nbd` behind. The signal
  fires when the *thread* that started the child ends, so a child must be started by the thread that
  owns it for its whole life (sources are opened and closed by the same job thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

#: What a helper may see of our environment: where programs are, and how to speak.
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")
GiB = 1 << 30
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    """What one helper may use. `cpu_s` 0 means no CPU limit (a long-running export)."""

    memory: int = GiB  # address space, bytes
    cpu_s: int = 30
    output: int = 1 << 20  # bytes of stdout kept; more kills the child
    timeout_s: float = 120.0


#: `qemu-img info` / `map` (OpenStack's limits for info: 1 GiB of address space, 30 s of CPU).
PROBE = Limits()
#: A `qemu-img map` of a large fragmented image prints a lot; past the cap the caller reads everything.
MAP = Limits(cpu_s=120, output=32 << 20, timeout_s=600.0)
#: `qemu-nbd` serving one export for a whole backup, and `qemu-img convert` writing a restore: their
#: CPU time grows with the disk, their memory does not.
SERVE = Limits(memory=2 * GiB, cpu_s=0, timeout_s=0)


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: str
    truncated: bool = False  # stdout passed `Limits.output`: the child was killed
    timed_out: bool = False

    @property
    def problem(self) -> str:
        """Why the run failed, in a few words, or ''."""
        if self.timed_out:
            return "it took too long and was stopped"
        if self.truncated:
            return "its output passed the size limit and it was stopped"
        if self.returncode < 0:
            return f"it was killed by signal {-self.returncode} (a resource limit?)"
        if self.returncode:
            return self.stderr.strip()[-300:] or f"exit status {self.returncode}"
        return ""


def child_env() -> dict[str, str]:
    """The environment of a helper: PASSED_ENV from ours, nothing else."""
    return {k: v for k, v in os.environ.items() if k in PASSED_ENV}


def _constrain(limits: Limits) -> None:
    """Runs in the child between fork and exec: no imports and no locks (the parent has threads),
    only system calls prepared in the parent."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.cpu_s:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))


def start(argv: list[str], limits: Limits = SERVE, **popen: object) -> subprocess.Popen:
    """A constrained helper that keeps running (stdin closed); the caller owns and reaps it.
    Raises FileNotFoundError when the program is not installed."""
    parent = os.getpid()

    def preexec() -> None:
        _constrain(limits)
        if os.getppid() != parent:  # the parent died before PDEATHSIG was armed
            os._exit(1)

    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=child_env(), preexec_fn=preexec,
                            close_fds=True, **popen)  # type: ignore[call-overload]  # no overload sees through **popen


def run(argv: list[str], limits: Limits = PROBE) -> Finished:
    """Runs a constrained helper to its end: stdout up to `limits.output`, stderr up to 64 KiB.
    Raises FileNotFoundError when the program is not installed."""
    proc = start(argv, limits, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    caps: dict = {proc.stdout: limits.output, proc.stderr: 64 << 10}
    got: dict = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    truncated = timed_out = False
    deadline = time.monotonic() + limits.timeout_s if limits.timeout_s else None
    with selectors.DefaultSelector() as sel:
        for pipe in caps:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                timed_out = True
                break
            for key, _ in sel.select(wait):
                piece = os.read(key.fd, 1 << 16)
                if not piece:
                    sel.unregister(key.fileobj)
                    continue
                buf = got[key.fileobj]
                room = caps[key.fileobj] - len(buf)
                buf += piece[:max(room, 0)]
                if len(piece) > room and key.fileobj is proc.stdout:
                    truncated = True
            if truncated:
                break
    if truncated or timed_out:
        proc.kill()
    proc.wait()
    for pipe in caps:
        pipe.close()
    return Finished(proc.returncode, bytes(got[proc.stdout]), got[proc.stderr].decode(errors="replace"),
                    truncated, timed_out)
