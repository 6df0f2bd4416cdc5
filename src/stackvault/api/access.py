"""Who may do what: oslo.policy rules with defaults an operator reads and overrides in a policy file.

The defaults follow OpenStack's personas: a project's `reader` reads what belongs to the project, its
`member` also acts on it, and an `admin` sees and acts on every project. A rule is checked against
the caller's token as keystonemiddleware validated it (roles and project from Keystone, never from
the request), with the project the request is about as the target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from oslo_config import cfg
from oslo_context import context
from oslo_policy import policy

from ..errors import UsageError

ADMIN = "role:admin"
PROJECT_READER = "(role:reader or role:member or role:admin) and project_id:%(project_id)s"
PROJECT_MEMBER = "(role:member or role:admin) and project_id:%(project_id)s"

RULES = [
    policy.RuleDefault("admin", ADMIN, "An administrator of the cloud: every project."),
    policy.RuleDefault("project_reader", PROJECT_READER, "Anyone with a role in the project the request is about."),
    policy.RuleDefault("project_member", PROJECT_MEMBER, "A member (or admin) of the project the request is about."),
    policy.DocumentedRuleDefault("stackvault:all_projects", "rule:admin",
                                 "See and act on every project's servers, backups, jobs and usage.",
                                 [{"path": "/v1/*?all_projects=1", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:server:list", "rule:project_reader or rule:admin",
                                 "List a project's servers with their protection and last backup.",
                                 [{"path": "/v1/servers", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:volume:list", "rule:project_reader or rule:admin",
                                 "List a project's volumes with their protection and last backup.",
                                 [{"path": "/v1/volumes", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:server:backup", "rule:project_member or rule:admin",
                                 "Start a backup of one of the project's servers.",
                                 [{"path": "/v1/servers/{server_id}/backups", "method": "POST"}]),
    policy.DocumentedRuleDefault("stackvault:server:protect", "rule:project_member or rule:admin",
                                 "Opt a project's server into a policy that selects servers by metadata.",
                                 [{"path": "/v1/servers/{server_id}/policies/{name}", "method": "PUT"}]),
    policy.DocumentedRuleDefault("stackvault:backup:list", "rule:project_reader or rule:admin",
                                 "List a project's backups.", [{"path": "/v1/backups", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:backup:show", "rule:project_reader or rule:admin",
                                 "Show one backup of a project.",
                                 [{"path": "/v1/backups/{backup_id}", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:backup:files", "rule:project_reader or rule:admin",
                                 "List and download the files inside a backup of a project.",
                                 [{"path": "/v1/backups/{backup_id}/files", "method": "GET"},
                                  {"path": "/v1/backups/{backup_id}/files/content", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:job:list", "rule:project_reader or rule:admin",
                                 "List the jobs that worked on a project's backups.",
                                 [{"path": "/v1/jobs", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:job:show", "rule:project_reader or rule:admin",
                                 "Show one job with its items, error and fix.",
                                 [{"path": "/v1/jobs/{job_id}", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:job:cancel", "rule:project_member or rule:admin",
                                 "Cancel a running restore of the project.",
                                 [{"path": "/v1/jobs/{job_id}/cancel", "method": "POST"}]),
    policy.DocumentedRuleDefault("stackvault:restore:create", "rule:project_member or rule:admin",
                                 "Restore a backup of the project to a new server in the caller's project.",
                                 [{"path": "/v1/restores", "method": "POST"}]),
    policy.DocumentedRuleDefault("stackvault:restore:show", "rule:project_reader or rule:admin",
                                 "Follow a restore of the project.",
                                 [{"path": "/v1/restores/{restore_id}", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:policy:list", "rule:project_reader or rule:admin",
                                 "The policies (the config's and those written through the API) that back "
                                 "up a project.",
                                 [{"path": "/v1/policies", "method": "GET"},
                                  {"path": "/v1/policies/{name}", "method": "GET"}]),
    policy.DocumentedRuleDefault("stackvault:policy:create", "rule:admin",
                                 "Write a new policy backing up a project (kept in the catalog).",
                                 [{"path": "/v1/policies", "method": "POST"}]),
    policy.DocumentedRuleDefault("stackvault:policy:update", "rule:admin",
                                 "Replace a policy written through the API.",
                                 [{"path": "/v1/policies/{name}", "method": "PUT"}]),
    policy.DocumentedRuleDefault("stackvault:policy:delete", "rule:admin",
                                 "Delete a policy written through the API.",
                                 [{"path": "/v1/policies/{name}", "method": "DELETE"}]),
    policy.DocumentedRuleDefault("stackvault:usage:show", "rule:project_reader or rule:admin",
                                 "The bytes a project's backups store.", [{"path": "/v1/usage", "method": "GET"}]),
]


@dataclass(frozen=True)
class Caller:
    """The Keystone identity of one request, as keystonemiddleware put it into the WSGI environment."""

    user_id: str
    project_id: str
    roles: tuple[str, ...]
    token: str
    context: context.RequestContext

    @classmethod
    def from_environ(cls, environ: dict) -> Caller:
        ctx = context.RequestContext.from_environ(environ)
        return cls(user_id=ctx.user_id or "", project_id=ctx.project_id or "", roles=tuple(ctx.roles),
                   token=environ.get("HTTP_X_AUTH_TOKEN", ""), context=ctx)


class Rules:
    """The enforcer: the defaults above, overridden by the operator's policy file when one is set."""

    def __init__(self, policy_file: str | None) -> None:
        if policy_file and not os.path.isfile(policy_file):
            raise UsageError(f"[api] policy_file {policy_file} is not a file",
                             "create it (an empty file keeps the default rules) or leave policy_file out")
        conf = cfg.ConfigOpts()
        conf([], project="stackvault", default_config_files=[], default_config_dirs=[])
        self._enforcer = policy.Enforcer(conf, policy_file=policy_file)
        self._enforcer.register_defaults(RULES)

    def allows(self, rule: str, caller: Caller, project_id: str) -> bool:
        """Whether `caller` may apply `rule` to `project_id` (the policy file is re-read when it changes)."""
        return bool(self._enforcer.authorize(rule, {"project_id": project_id}, caller.context, do_raise=False))
