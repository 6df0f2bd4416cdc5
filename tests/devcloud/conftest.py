"""Dev cloud tests share one cloud per session: the `devcloud` fixture of devcloud.pytest_plugin,
registered by tests/conftest.py for every test directory (one cloud per session, not one per folder)."""
