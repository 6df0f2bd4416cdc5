"""Deleting what a job made in the cloud: retried through a busy cloud's hiccups, never silently lost.

A snapshot image or temporary volume left behind costs the operator quota and money, and a 500 or a
dropped connection from a loaded Glance or Cinder is common enough that one try is not enough.
Whatever still cannot be deleted is named in the job's report (and `stackvault cleanup` finds it by
its tag); it never fails a backup that is already committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from .connection import CloudError, _first_line

ATTEMPTS = 4
FIRST_DELAY_S = 0.5


def _retryable(exc: BaseException) -> bool:
    """5xx, 409 (the object is still busy: attaching, uploading) and 429, or no answer at all."""
    if isinstance(exc, os_exc.HttpException):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code in (409, 429)
    return isinstance(exc, (ks_exc.ConnectionError, os_exc.ResourceTimeout))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, os_exc.HttpException) and exc.status_code:
        details = (str(exc.details or "").strip().splitlines() or [""])[0][:200]
        return f"HTTP {exc.status_code}" + (f" ({details})" if details else "")
    return _first_line(exc)


def remove(what: str, delete: Callable[[], None], leftovers: list[str] | None = None) -> bool:
    """Run `delete` until it works; False (and `what` noted in `leftovers`) when it never did.

    `delete` must treat an object that is already gone as success (ignore_missing=True).
    """
    delay = FIRST_DELAY_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            delete()
            return True
        except os_exc.NotFoundException:
            return True
        except (os_exc.SDKException, ks_exc.ClientException, CloudError) as exc:  # CloudError: a wait timed out
            if attempt == ATTEMPTS or not _retryable(exc):
                if leftovers is not None:
                    leftovers.append(f"{what}: {_reason(exc)}")
                return False
        time.sleep(delay)
        delay *= 2
    return False


def leftovers_warning(leftovers: list[str]) -> str | None:
    """The report's line for what stayed in the cloud, with the fix."""
    if not leftovers:
        return None
    return (f"left in the cloud after {ATTEMPTS} tries: {'; '.join(leftovers)} "
            "(tagged stackvault_temp: `stackvault cleanup` removes it)")
