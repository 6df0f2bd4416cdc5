"""The first schema: jobs, backups and their disks (as created by `create_all` before migrations existed).

Catalogs made by that older code have exactly these tables and are stamped with this revision
instead of running it (see `stackvault.catalog.schema`).

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("repo_id", sa.String(40), nullable=False),
        sa.Column("started", sa.String(40), nullable=False),
        sa.Column("finished", sa.String(40), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
    )
    op.create_index("ix_jobs_repo_id", "jobs", ["repo_id"])
    op.create_table(
        "backups",
        sa.Column("backup_id", sa.String(64), primary_key=True),
        sa.Column("repo_id", sa.String(40), nullable=False),
        sa.Column("created", sa.String(40), nullable=False),
        sa.Column("finished", sa.String(40), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("requested_level", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("consistency", sa.String(40), nullable=True),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("bytes_stored", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
    )
    op.create_index("ix_backups_repo_id", "backups", ["repo_id"])
    op.create_index("ix_backups_created", "backups", ["created"])
    op.create_table(
        "disks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("backup_id", sa.String(64), sa.ForeignKey("backups.backup_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("disk_key", sa.String(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("bytes_stored", sa.BigInteger(), nullable=False),
        sa.Column("blocks_total", sa.BigInteger(), nullable=False),
        sa.Column("blocks_changed", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_disks_backup_id", "disks", ["backup_id"])
    op.create_index("ix_disks_disk_key", "disks", ["disk_key"])


def downgrade() -> None:
    op.drop_table("disks")
    op.drop_table("backups")
    op.drop_table("jobs")
