"""What every request of one API process shares: the settings, the rules, the repository's job
context and the cloud the service user belongs to."""

from __future__ import annotations

import threading
from functools import cached_property

from flask import g, has_request_context

from ..catalog.policies import StoredPolicies
from ..config import Policy, Settings
from ..errors import UsageError
from ..jobs.context import JobContext
from ..service.policies import PoliciesInForce, policies_in_force
from .access import Rules
from .restore_runs import RestoreRun


class ApiService:
    def __init__(self, settings: Settings, passphrase_file: str | None = None) -> None:
        self.settings = settings
        self.rules = Rules(settings.api.policy_file)
        self._ctx = JobContext(settings, passphrase_file)
        self._opening = threading.Lock()
        self._projects: dict[str | None, str] = {}
        #: The restores this process started, by job id: followed while they run (api/restore_runs.py).
        self.restores: dict[str, RestoreRun] = {}

    def context(self) -> JobContext:
        """The job context, its repository opened (and checked against this proxy's trust) and its catalog
        connected once, whichever request comes first."""
        with self._opening:
            self._ctx.repo  # noqa: B018 - the cached properties are the point
            self._ctx.catalog  # noqa: B018
        return self._ctx

    @cached_property
    def service_auth(self) -> dict:
        """The service user's clouds.yaml `auth` (password included: handed to keystonemiddleware only)."""
        import openstack.config

        from .. import logs

        name = self.settings.api.service_cloud
        if not name:
            raise UsageError("[api] service_cloud is not set",
                             "name the clouds.yaml entry of stackvault's service user in [api] service_cloud")
        try:
            region = openstack.config.OpenStackConfig().get_one(cloud=name)
        except openstack.exceptions.ConfigException as exc:
            raise UsageError(f"[api] service_cloud {name!r} is not in clouds.yaml: {exc}",
                             "add the entry, or set OS_CLIENT_CONFIG_FILE to the clouds.yaml holding it") from None
        auth = dict(region.config.get("auth") or {})
        logs.keep_cloud_secrets(auth)
        return {**auth, "region_name": region.region_name, "interface": region.config.get("interface")}

    @property
    def auth_url(self) -> str:
        return self.settings.api.auth_url or self.service_auth["auth_url"]

    def stored_policies(self) -> StoredPolicies:
        """The policies written through the API, kept in the catalog for this repository."""
        ctx = self.context()
        return StoredPolicies(ctx.catalog, ctx.repo.id)

    def end_policy_runs(self, name: str, why: str) -> list[str]:
        """End the unfinished runs (backups and full verify) of a policy that is no longer in force."""
        from ..catalog.queue import PolicyQueue
        from ..service.policy_run import FULL_VERIFY_SUFFIX

        ctx = self.context()
        return PolicyQueue(ctx.catalog, ctx.repo.id).end_runs([name, f"{name}{FULL_VERIFY_SUFFIX}"], why)

    def policies_in_force(self) -> PoliciesInForce:
        """The config's policies and the catalog's, read once per request (a listing asks for every server)."""
        if has_request_context() and "policies_in_force" in g:
            return g.policies_in_force
        found = policies_in_force(self.settings, self.stored_policies())
        if has_request_context():
            g.policies_in_force = found
        return found

    def policies(self) -> list[Policy]:
        """The policies in force (the built-in proxy-state policy is the proxy's, no project's)."""
        return [p for p in self.policies_in_force().policies.values() if not p.builtin]

    def policy_project(self, policy: Policy) -> str:
        """The project a policy backs up: its `project`, else the one its cloud entry is scoped to."""
        from ..cloud.connection import connect

        if policy.project:
            return policy.project
        os_cloud = policy.os_cloud or self.settings.cloud.os_cloud
        with self._opening:
            if os_cloud not in self._projects:
                self._projects[os_cloud] = connect(os_cloud).current_project_id or ""
            return self._projects[os_cloud]

    @cached_property
    def service_user_id(self) -> str:
        """The service user's Keystone id: the trustee of the trusts restores run with (api/delegation.py)."""
        from ..cloud.connection import connect

        return connect(self.settings.api.service_cloud).current_user_id or ""
