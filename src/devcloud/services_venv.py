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


def requirements_hash(requirements: Path = REQUIREMENTS) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:12]


def cached_venv(cache_dir: Path, kind: str, requirements: Path, hint: str) -> Path:
    """`<cache>/venv-<kind>-<hash>`: a complete virtualenv for `requirements`, built the first time.

    Shared by every venv the dev cloud needs (the services, Swift): built in place under a lock and
    marked complete only when pip succeeded, so an interrupted build is redone rather than used.
    """
    target = Path(cache_dir) / f"venv-{kind}-{requirements_hash(requirements)}"
    if (target / COMPLETE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
        if not (target / COMPLETE_MARKER).exists():
            _build(target, requirements, hint)
    return target


def _build(path: Path, requirements: Path, hint: str) -> None:
    if path.exists():
        shutil.rmtree(path)  # an earlier build was interrupted
    started = time.monotonic()
    log.info("creating the virtualenv %s (first time only)", path)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    proc = subprocess.run([*pip, "install", "-r", str(requirements)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-20:])
        raise DevcloudError(f"installing {requirements.name} into {path} failed ({hint}):\n{tail}")
    (path / COMPLETE_MARKER).write_text(requirements.read_text())
    log.info("virtualenv %s ready in %.0f s", path.name, time.monotonic() - started)


def ensure(ctx: CloudContext) -> Path:
    """Make `<state>/venv` point at a complete services venv matching the requirements file."""
    target = cached_venv(ctx.cache_dir, "services", REQUIREMENTS,
                         "uWSGI needs gcc and python3-dev; PyPI must be reachable")
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
