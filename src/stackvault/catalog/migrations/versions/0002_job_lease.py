"""Job rows get a lease: the host and pid running the job, its last heartbeat and when its lease ends.

A proxy killed mid-job left its row `running` forever; with a lease, whoever opens the catalog next
sees that the lease has ended and marks the row `interrupted` (see `stackvault.catalog.leases`). Rows
written before this revision have no lease and are left as they are.

Revision ID: 0002_job_lease
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_job_lease"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("host", sa.String(), nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("heartbeat", sa.String(40), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in ("lease_expires", "heartbeat", "pid", "host"):
            batch.drop_column(column)
