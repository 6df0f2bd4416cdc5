"""An index for a policy's newest run, which the server reads for every policy at every poll.

`last_slot` read every run of the policy and kept the last; it is one row through this index now.

Revision ID: 0005_policy_runs_newest
Revises: 0004_one_unfinished_run
"""

from __future__ import annotations

from alembic import op

revision = "0005_policy_runs_newest"
down_revision = "0004_one_unfinished_run"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_policy_runs_newest", "policy_runs", ["repo_id", "policy", "created"])


def downgrade() -> None:
    op.drop_index("ix_policy_runs_newest", table_name="policy_runs")
