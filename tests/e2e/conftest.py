"""Fixtures: each test gets its own repository, working directory and catalog under its tmp dir."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest

from .helpers import Stackvault


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Random data that is the same on every run of a test, so a failure can be replayed exactly."""
    return random.Random(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def sv(tmp_path: Path) -> Stackvault:
    """A user's setup with no repository yet."""
    return Stackvault(tmp_path / "sv")


@pytest.fixture
def repo(sv: Stackvault) -> Stackvault:
    """A user's setup with a fresh repository of 64 KiB blocks."""
    sv.init("64KiB")
    return sv
