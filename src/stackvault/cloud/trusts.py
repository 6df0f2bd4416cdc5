"""Keystone trusts: a user's roles in their project delegated to the backup service's user, so that a
restore the user asked for acts in the user's project, and nowhere else, without keeping their token."""

from __future__ import annotations

from datetime import datetime


def create_trust(conn, *, trustor_user_id: str, trustee_user_id: str, project_id: str, roles: list[str],
                 expires_at: datetime) -> str:
    """A trust (with impersonation) from the trustor, whose token `conn` holds, to the trustee in
    `project_id` with `roles`, ending at `expires_at`; its id. Not retried: a second create would make a
    second trust. Keystone's refusal is raised as openstacksdk's error, for the caller to word."""
    trust = conn.identity.create_trust(
        trustor_user_id=trustor_user_id, trustee_user_id=trustee_user_id, project_id=project_id,
        impersonation=True, roles=[{"name": r} for r in roles], expires_at=expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return trust.id
