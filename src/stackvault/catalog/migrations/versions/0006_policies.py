"""Policies written through the API, beside the config's `[policy.NAME]` tables: so the API process
and every proxy's `stackvault server` sharing the catalog read the same ones.

Revision ID: 0006_policies
Revises: 0005_policy_runs_newest
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_policies"
down_revision = "0005_policy_runs_newest"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("repo_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("updated", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policies")
