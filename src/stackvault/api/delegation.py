"""How a restore acts in the project of the user who asked for it: a Keystone trust.

The request carries the user's token, but a restore outlives a request and a token must never be
stored. So the API asks Keystone, with that token, for a trust from the user (trustor) to the
service user (trustee), limited to the user's project and to the `member` role, impersonating the
user, and expiring on its own. The restore's thread then authenticates as the service user *with
that trust*: Keystone scopes the token it gets to the user's project and nothing else, so whatever
the restore creates (image, volumes accepted through a Cinder transfer, server) lands there and can
land nowhere else. Only the trust's id is kept with the job; it is useless without the service
user's password.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from http import HTTPStatus

import openstack
from openstack import exceptions as os_exc

from .. import logs
from ..cloud.trusts import create_trust
from ..retrying import first_line
from .access import Caller
from .faults import ApiError
from .service import ApiService

#: How long a trust can be used: longer than any restore may run (Keystone then refuses it by itself).
TRUST_LIFETIME = timedelta(hours=12)

#: The service user's clouds.yaml keys that a trust-scoped authentication takes (no project: the trust
#: names it).
_USER_KEYS = ("auth_url", "username", "password", "user_id", "user_domain_name", "user_domain_id")


def delegated_roles(caller: Caller) -> list[str]:
    """`member` (what a restore needs: images, volumes, servers); a caller without it delegates what it has."""
    return ["member"] if "member" in caller.roles else list(caller.roles)


def trust_from(svc: ApiService, caller: Caller, conn) -> str:
    """A trust from `caller` to the service user in the caller's project; `conn` is on the caller's token."""
    try:
        return create_trust(conn, trustor_user_id=caller.user_id, trustee_user_id=svc.service_user_id,
                            project_id=caller.project_id, roles=delegated_roles(caller),
                            expires_at=datetime.now(UTC) + TRUST_LIFETIME)
    except os_exc.SDKException as exc:
        raise ApiError(HTTPStatus.FORBIDDEN, f"Keystone refused to delegate your role in project {caller.project_id} "
                       f"to the backup service: {first_line(exc)}",
                       "log in with a password, or with an application credential created --unrestricted") from None


def trust_connection(svc: ApiService, trust_id: str):
    """openstacksdk as the service user, scoped by the trust to the trustor's project."""
    auth = svc.service_auth
    conn = openstack.connect(auth_type="password", trust_id=trust_id, region_name=auth.get("region_name"),
                             interface=auth.get("interface") or "public", load_yaml_config=False,
                             load_envvars=False, **{k: auth[k] for k in _USER_KEYS if auth.get(k)})
    logs.keep_secret(conn.authorize())
    return conn
