"""The policies in force: the config's `[policy.NAME]` tables and those written through the API into
the catalog (catalog/policies.py), both read by the config's own parser.

A name is the config's or the catalog's, never both: the API refuses to write a policy of a name the
config has. Should a config gain a table of a name the catalog already keeps, the config's wins and the
stored one is left out, said once by `stackvault server`'s log; so is a stored policy that no longer
parses (written by an older stackvault), rather than stopping every other policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog.policies import StoredPolicies
from ..config import Policy, Settings, parse_policy
from ..errors import UsageError

#: Where a stored policy's errors say it is kept.
CATALOG = "the catalog"


@dataclass(frozen=True)
class PoliciesInForce:
    policies: dict[str, Policy]  # by name: the config's, then the catalog's
    stored: frozenset[str] = frozenset()  # the names of those kept in the catalog
    left_out: dict[str, str] = field(default_factory=dict)  # a stored policy's name -> why it is not in force


def stored_policy(name: str, keys: dict) -> Policy:
    """A policy kept in the catalog, read as the same table in a config would be."""
    return parse_policy(name, keys, CATALOG)


def policies_in_force(settings: Settings, stored: StoredPolicies) -> PoliciesInForce:
    policies = dict(settings.policies)
    names, left_out = set(), {}
    for name, keys in stored.all().items():
        if name in settings.policies:
            left_out[name] = "the config has a policy of that name, which is the one in force"
            continue
        try:
            policies[name] = stored_policy(name, keys)
            names.add(name)
        except UsageError as exc:
            left_out[name] = str(exc)
    return PoliciesInForce(policies, frozenset(names), left_out)
