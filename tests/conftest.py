"""The dev cloud's session fixture, for every test directory that needs a cloud (one per session)."""

pytest_plugins = ["devcloud.pytest_plugin"]
