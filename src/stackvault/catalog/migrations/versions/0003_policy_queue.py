"""The policy queue: due runs of scheduling policies and their items, which every proxy's workers claim.

`policy_runs` holds one row per (repository, policy, slot), so two proxies that find the same slot due
make one run; `policy_items` holds its servers and volumes, each claimed by one worker under a lease
(`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL) and taken back when a killed proxy's lease ends.

Revision ID: 0003_policy_queue
Revises: 0002_job_lease
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_policy_queue"
down_revision = "0002_job_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("repo_id", sa.String(40), nullable=False),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("slot", sa.String(40), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("finished", sa.String(40), nullable=True),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("heartbeat", sa.String(40), nullable=True),
        sa.Column("lease_expires", sa.Float(), nullable=True),
        sa.UniqueConstraint("repo_id", "policy", "slot", name="uq_policy_runs_slot"),
    )
    op.create_table(
        "policy_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("policy_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("availability_zone", sa.String(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("result", sa.String(20), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("heartbeat", sa.String(40), nullable=True),
        sa.Column("lease_expires", sa.Float(), nullable=True),
    )
    op.create_index("ix_policy_runs_repo_id", "policy_runs", ["repo_id"])
    op.create_index("ix_policy_runs_policy", "policy_runs", ["policy"])
    op.create_index("ix_policy_items_run_id", "policy_items", ["run_id"])
    op.create_index("ix_policy_items_status", "policy_items", ["status"])


def downgrade() -> None:
    op.drop_table("policy_items")
    op.drop_table("policy_runs")
