"""Dev cloud tests share one cloud per session: the `devcloud` fixture of devcloud.pytest_plugin,
registered by tests/conftest.py for every test directory (one cloud per session, not one per folder)."""

from __future__ import annotations

import pytest

from devcloud.nova.testing import NovaUser


@pytest.fixture(scope="module")
def admin(devcloud) -> NovaUser:
    """The compute API as the dev cloud's admin."""
    return NovaUser(devcloud, "admin", devcloud.ctx.admin_password)


@pytest.fixture(scope="module")
def demo(devcloud) -> NovaUser:
    """The compute API as the demo project's member."""
    return NovaUser(devcloud, "demo", devcloud.ctx.demo_password)


@pytest.fixture(scope="module")
def images(devcloud) -> dict[str, str]:
    """The dev cloud's Glance images, name -> id."""
    return {i["name"]: i["id"] for i in devcloud.status()["images"]}
