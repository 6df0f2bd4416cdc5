"""Dev cloud tests share one cloud per session: the `devcloud` fixture (see devcloud.pytest_plugin).

The fixture is imported rather than listed in `pytest_plugins`, which pytest only accepts in a
top-level conftest.
"""

from devcloud.pytest_plugin import devcloud  # noqa: F401  (the session fixture)
