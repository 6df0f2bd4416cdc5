"""Connecting the OpenStack way: clouds.yaml or OS_* variables, through openstacksdk."""

from __future__ import annotations

import openstack
from keystoneauth1 import exceptions as ks_exc
from openstack import exceptions as os_exc

from ..errors import UsageError


class CloudError(UsageError):
    """The cloud refused or could not do what a job needed (credentials, quota, a failed snapshot)."""

    exit_code = 1


def connect(cloud: str | None = None) -> openstack.connection.Connection:
    """A checked connection: bad credentials fail here, with the cloud's name, not mid-backup."""
    try:
        conn = openstack.connect(cloud=cloud) if cloud else openstack.connect()
        conn.authorize()
    except os_exc.ConfigException as exc:
        raise UsageError(f"cloud {cloud or '(from OS_* environment)'} is not configured: {exc}",
                         "pass --os-cloud NAME of a clouds.yaml entry, or set OS_CLOUD / OS_AUTH_URL") from None
    except (ks_exc.Unauthorized, os_exc.HttpException) as exc:
        raise UsageError(f"cloud {cloud or 'from OS_* environment'} refused the credentials: {_first_line(exc)}",
                         "check the user, password or application credential in clouds.yaml") from None
    except ks_exc.ConnectFailure as exc:
        raise UsageError(f"cannot reach the identity service of cloud {cloud or '(OS_* environment)'}: "
                         f"{_first_line(exc)}", "check auth_url and the network") from None
    return conn


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
