"""Fixtures shared by unit tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackvault.api.app import create_app
from stackvault.config import load_settings


@pytest.fixture
def client(tmp_path: Path):
    """The API's Flask test client on a new local repository, without keystonemiddleware in front."""
    repo = tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "stackvault", "--repo", str(repo), "--workdir", str(tmp_path / "work"),
                    "init", "--block-size", "64KiB"], check=True, capture_output=True)
    settings = load_settings(None, repo=str(repo), workdir=str(tmp_path / "work"))
    return create_app(settings, authenticate=False).test_client()
