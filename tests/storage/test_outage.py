"""A real outage: Swift's object server goes away for a moment while a chunk is being stored.

The proxy answers 503 (S3: ServiceUnavailable) until the server is back; the retry wrapper rides
it out, and the object is there, whole, afterwards.
"""

from __future__ import annotations

import os
import threading

import pytest

from stackvault.storage import open_backend

from .conftest import unique_name


@pytest.mark.parametrize("scheme", ["s3", "swift"])
def test_a_short_outage_costs_retries_not_data(request, swift_aio, scheme: str) -> None:
    request.getfixturevalue("s3_env" if scheme == "s3" else "tempauth_env")
    backend = open_backend(f"{scheme}://{unique_name('outage')}/p")
    backend.create()
    # The outage lasts longer than 6 quick tries; on a loaded machine the object server takes a while to
    # come back, so the tries may span a minute or two (jittered backoff of at most 8 s each).
    backend.attempts = 24  # type: ignore[attr-defined]  # open_backend gives the retrying wrapper
    body = os.urandom(1 << 20)

    swift_aio.stop_server("swift-object")
    back = threading.Timer(1.5, swift_aio.start)
    back.start()
    try:
        backend.put("chunks/ab/outage", body)
    finally:
        back.join()
    assert backend.retries >= 1  # type: ignore[attr-defined]  # the retrying wrapper's count
    assert backend.get("chunks/ab/outage") == body
