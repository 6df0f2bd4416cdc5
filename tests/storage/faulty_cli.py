"""The real `stackvault` CLI with faults injected into its storage, for the tests' subprocesses.

`python faulty_cli.py ARGS...` runs `stackvault ARGS...` with every repository driver wrapped in a
`FaultyBackend` built from $SV_TEST_FAULTS (see stackvault.storage.faulty.parse), under the retry
wrapper, as a misbehaving store would sit under it. Nothing else changes: real HTTP to a real store.
"""

from __future__ import annotations

import os
import sys

from stackvault.storage import base, faulty

_real_open_driver = base.open_driver


def _open_faulty_driver(location: str, **options: object) -> base.Backend:
    driver = _real_open_driver(location, **options)  # type: ignore[arg-type]  # the options as the CLI gave them
    return faulty.FaultyBackend(driver, faulty.parse(os.environ.get("SV_TEST_FAULTS", "")))


if __name__ == "__main__":
    base.open_driver = _open_faulty_driver
    from stackvault.cli import main

    sys.argv[0] = "stackvault"
    sys.exit(main())
