"""Deleting what a job made in the cloud: retried through a busy cloud's hiccups, never silently lost.

A snapshot image or temporary volume left behind costs the operator quota and money, and a 500 or a
dropped connection from a loaded Glance or Cinder is common enough that one try is not enough.
Whatever still cannot be deleted is named in the job's report (and `stackvault cleanup` finds it by
its tag); it never fails a backup that is already committed.
"""

from __future__ import annotations

from collections.abc import Callable

from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from ..retrying import REMOVAL, cloud_reason, transient_cloud
from .connection import CloudError


def _retryable(exc: BaseException) -> bool:
    """What any cloud call retries, and also 409 (the object is still busy: attaching, uploading) and a
    wait for the deletion that ran out (the next try asks again)."""
    if isinstance(exc, os_exc.HttpException) and exc.status_code == 409:
        return True
    return transient_cloud(exc) or isinstance(exc, os_exc.ResourceTimeout)


def remove(what: str, delete: Callable[[], None], leftovers: list[str] | None = None) -> bool:
    """Run `delete` until it works; False (and `what` noted in `leftovers`) when it never did.

    `delete` must treat an object that is already gone as success (ignore_missing=True).
    """
    try:
        REMOVAL.call(f"delete {what}", delete, _retryable, describe=cloud_reason)
    except os_exc.NotFoundException:
        return True
    except (os_exc.SDKException, ks_exc.ClientException, CloudError) as exc:  # CloudError: a wait timed out
        if leftovers is not None:
            leftovers.append(f"{what}: {cloud_reason(exc)}")
        return False
    return True


def leftovers_warning(leftovers: list[str]) -> str | None:
    """The report's line for what stayed in the cloud, with the fix."""
    if not leftovers:
        return None
    return (f"left in the cloud after {REMOVAL.attempts} tries: {'; '.join(leftovers)} "
            "(tagged stackvault_temp: `stackvault cleanup` removes it)")
