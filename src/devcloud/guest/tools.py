"""Running the host tools the guest code needs (apt-get, dpkg-deb, mkfs.ext4, qemu-img, ...)."""

from __future__ import annotations

import subprocess
from pathlib import Path

INSTALL_HINT = "install the packages in deps/apt-devcloud.txt (scripts/bootstrap does)"


def run(argv: list[str], what: str, error: type[Exception], cwd: Path | None = None) -> str:
    """Run argv and return its stdout; on failure raise `error` naming `what` and the tool's own words."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise error(f"{what}: {exc.filename} not found: {INSTALL_HINT}") from exc
    if done.returncode != 0:
        raise error(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout
