"""Connecting the OpenStack way (clouds.yaml or OS_* variables, through openstacksdk), and the retry every
repeatable cloud call goes through."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import openstack
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from .. import logs
from ..errors import UsageError
from ..retrying import SERVICE, cloud_reason, first_line, transient_cloud

T = TypeVar("T")


class CloudError(UsageError):
    """The cloud refused or could not do what a job needed (credentials, quota, a failed snapshot)."""

    exit_code = 1


def connect(cloud: str | None = None) -> openstack.connection.Connection:
    """A checked connection: bad credentials fail here, with the cloud's name, not mid-backup."""
    name = cloud or "(from OS_* environment)"
    try:
        conn = openstack.connect(cloud=cloud) if cloud else openstack.connect()
        logs.keep_cloud_secrets(conn.config.config.get("auth") or {})  # --debug logs API calls: never these
        logs.keep_secret(conn.authorize())
    except os_exc.ConfigException as exc:
        raise UsageError(f"cloud {name} is not configured: {exc}",
                         "pass --os-cloud NAME of a clouds.yaml entry, or set OS_CLOUD / OS_AUTH_URL") from None
    except (ks_exc.ClientException, os_exc.SDKException) as exc:
        # `authorize` wraps keystoneauth's errors in a bare SDKException: the original says which it was
        cause = exc.__context__ if isinstance(exc.__context__, ks_exc.ClientException) else exc
        if isinstance(cause, ks_exc.ConnectFailure):
            raise UsageError(f"cannot reach the identity service of cloud {name}: {first_line(cause)}",
                             "check auth_url and the network") from None
        raise UsageError(f"cloud {name} refused the credentials: {first_line(cause)}",
                         "check the user, password or application credential in clouds.yaml") from None
    return conn



def cloud_call(what: str, fn: Callable[[], T]) -> T:
    """`fn()`, a call that is safe to repeat (a read, a listing, a metadata update), under the one
    retry policy: a 5xx, 429 or dropped connection is tried again; anything else is raised at once."""
    return SERVICE.call(what, fn, transient_cloud, describe=cloud_reason)


def listing_query(all_projects: bool, project_id: str | None) -> dict[str, object]:
    """A detailed listing's query: the token's project, or (an admin's) every project's or one other's."""
    query: dict[str, object] = {"details": True}
    if all_projects:
        query["all_projects"] = True
        if project_id is not None:
            query["project_id"] = project_id
    return query


def found(what: str, find: Callable[[], object]) -> bool:
    """Whether `find` (an SDK `find_*` call with `ignore_missing=True`) finds `what`, a name or an id:
    several of one name count as found, as a restore must not add one more of that name."""
    try:
        return cloud_call(f"find {what}", find) is not None
    except os_exc.DuplicateResource:
        return True
