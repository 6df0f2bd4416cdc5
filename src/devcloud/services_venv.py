"""The services virtualenv: real Keystone, Glance, Cinder, uWSGI and the OpenStack clients.

Installing it takes a minute or two, so it is built once per content of
`requirements-services.txt` in a cache dir shared by every state dir
(`<cache>/venv-services-<hash>`), and each state dir's `venv` is a symlink to it. A venv cannot be
moved (its scripts' shebangs name its path), so it is built in place, guarded by a lock (two test
sessions may start at once) and marked complete only when pip succeeded.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from devcloud.context import CloudContext, DevcloudError

log = logging.getLogger("devcloud")

REQUIREMENTS = Path(__file__).with_name("requirements-services.txt")
COMPLETE_MARKER = ".devcloud-complete"


def requirements_hash() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:12]


def cached_venv_path(cache_dir: Path) -> Path:
    return cache_dir / f"venv-services-{requirements_hash()}"


def _build(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)  # an earlier build was interrupted
    started = time.monotonic()
    log.info("creating the services virtualenv %s (first time only, ~2 min)", path)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    proc = subprocess.run([*pip, "install", "-r", str(REQUIREMENTS)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-20:])
        raise DevcloudError(
            f"installing {REQUIREMENTS.name} into {path} failed (uWSGI needs gcc and python3-dev; "
            f"PyPI must be reachable):\n{tail}")
    (path / COMPLETE_MARKER).write_text(REQUIREMENTS.read_text())
    log.info("services virtualenv ready in %.0f s", time.monotonic() - started)


def ensure(ctx: CloudContext) -> Path:
    """Make `<state>/venv` point at a complete services venv matching the requirements file."""
    target = cached_venv_path(ctx.cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target / COMPLETE_MARKER).exists():
        with open(target.parent / f"{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
            if not (target / COMPLETE_MARKER).exists():
                _build(target)
    link = ctx.venv_dir
    if link.is_symlink() and link.resolve() == target.resolve():
        return target
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target
