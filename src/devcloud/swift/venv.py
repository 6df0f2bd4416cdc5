"""Swift's own virtualenv, built once per content of `requirements.txt` and shared by state dirs.

Swift is not in the services venv (whose requirements file belongs to the dev cloud core), and
stackvault's venv must not carry a storage server, so Swift gets `<cache>/venv-swift-<hash>`:
built in place under a lock (two test sessions may start at once), marked complete only when pip
succeeded, so an interrupted build is redone rather than used.
"""

from __future__ import annotations

from pathlib import Path

from devcloud.services_venv import cached_venv

REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def ensure(cache_dir: Path) -> Path:
    """A complete Swift virtualenv for the current requirements (built the first time, ~40 s)."""
    return cached_venv(cache_dir, "swift", REQUIREMENTS, "PyPI must be reachable")
