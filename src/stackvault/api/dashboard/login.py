"""Logging in to the dashboard: Keystone credentials to a project-scoped token, with keystoneauth1.

Two ways, as OpenStack's own clients: a user's name, password and project (in a domain, `Default`
unless told), or an application credential (its id and secret; its project is its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from ...errors import UsageError


@dataclass(frozen=True)
class Credentials:
    method: str  # "password" or "application_credential"
    username: str = ""
    password: str = ""
    project: str = ""
    domain: str = "Default"
    credential_id: str = ""
    credential_secret: str = ""

    def plugin(self, auth_url: str):
        if self.method == "application_credential":
            if not (self.credential_id and self.credential_secret):
                raise UsageError("an application credential needs its id and its secret",
                                 "give both (`openstack application credential create` shows them)")
            return v3.ApplicationCredential(auth_url=auth_url, application_credential_id=self.credential_id,
                                            application_credential_secret=self.credential_secret)
        if not (self.username and self.password and self.project):
            raise UsageError("a login needs a user name, a password and a project", "fill in all three")
        domain = self.domain or "Default"
        return v3.Password(auth_url=auth_url, username=self.username, password=self.password,
                           user_domain_name=domain, project_name=self.project, project_domain_name=domain)


@dataclass(frozen=True)
class Login:
    token: str
    user_name: str
    project_name: str
    expires: str


def log_in(auth_url: str, credentials: Credentials) -> Login:
    """A token of Keystone at `auth_url` for `credentials` (UsageError, with what to do, when refused)."""
    plugin = credentials.plugin(auth_url)
    try:
        access = plugin.get_access(ks_session.Session(auth=plugin))
    except ks_exc.Unauthorized:
        raise UsageError("Keystone refused these credentials",
                         "check the user name, password and project, or the application credential") from None
    except ks_exc.ConnectFailure:
        raise UsageError("Keystone cannot be reached", "try again; if it lasts, tell the cloud's operators") from None
    except ks_exc.ClientException as exc:
        raise UsageError(f"Keystone did not log you in: {exc}", "check the project's name and domain") from None
    if not access.project_id:
        raise UsageError("the token is not scoped to a project", "name a project you have a role in")
    return Login(token=access.auth_token, user_name=access.username or access.user_id,
                 project_name=access.project_name or access.project_id,
                 expires=access.expires.isoformat() if access.expires else "")
