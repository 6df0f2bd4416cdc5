"""Swift's own virtualenv, built once per content of `requirements.txt` and shared by state dirs.

Swift is not in the services venv (whose requirements file belongs to the dev cloud core), and
stackvault's venv must not carry a storage server, so Swift gets `<cache>/venv-swift-<hash>`:
built in place under a lock (two test sessions may start at once), marked complete only when pip
succeeded, so an interrupted build is redone rather than used.
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

from devcloud.context import DevcloudError

log = logging.getLogger("devcloud.swift")

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
COMPLETE_MARKER = ".devcloud-complete"


def venv_path(cache_dir: Path) -> Path:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return Path(cache_dir) / f"venv-swift-{digest.hexdigest()[:12]}"


def ensure(cache_dir: Path) -> Path:
    """A complete Swift virtualenv for the current requirements (built the first time, ~40 s)."""
    target = venv_path(cache_dir)
    if (target / COMPLETE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / COMPLETE_MARKER).exists():
            _build(target)
    return target


def _build(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)  # an earlier build was interrupted
    started = time.monotonic()
    log.info("creating the Swift virtualenv %s (first time only, ~40 s)", path)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    proc = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check",
                           "-q", "install", "-r", str(REQUIREMENTS)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-20:])
        raise DevcloudError(f"installing {REQUIREMENTS} into {path} failed (PyPI must be "
                            f"reachable):\n{tail}")
    (path / COMPLETE_MARKER).write_text(REQUIREMENTS.read_text())
    log.info("Swift virtualenv ready in %.0f s", time.monotonic() - started)
