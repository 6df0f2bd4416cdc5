"""The dev cloud's session fixture, for every test directory that needs a cloud (one per session);
and the budget of the property-based tests (hypothesis).

The default profile keeps fuzzing in the default test tier cheap and repeatable (a fixed number of
examples, derandomized, no per-example deadline on a loaded machine); `HYPOTHESIS_PROFILE=slow`
runs many more examples, as the tests marked `slow` do on their own.
"""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["devcloud.pytest_plugin"]

settings.register_profile("default", max_examples=150, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
