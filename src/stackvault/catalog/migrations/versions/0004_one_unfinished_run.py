"""At most one unfinished run per repository and policy, enforced by the database.

The check "has the policy an unfinished run?" and the insert of a new run are two statements: on
PostgreSQL, a `run-policy` and a server (or two servers) opening a run of one policy within
milliseconds both passed the check, and the policy ran twice at once. A partial unique index on
(repo_id, policy) over the rows whose status is not `done` makes the second insert fail, whatever the
isolation level; SQLite has partial indexes too.

Two unfinished runs of one policy that such a race left are closed first, all but the oldest, as
failed, so that the index can be made.

Revision ID: 0004_one_unfinished_run
Revises: 0003_policy_queue
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_one_unfinished_run"
down_revision = "0003_policy_queue"
branch_labels = None
depends_on = None

UNFINISHED = sa.text("status != 'done'")


def upgrade() -> None:
    closed = {"status": "failed", "error": "a second run of the policy opened at the same time; "
                                           "closed when the catalog was upgraded"}
    report = sa.bindparam("report", closed, type_=sa.JSON())
    op.execute(sa.text(
        "UPDATE policy_runs SET status = 'done', finished = created, report = :report "
        "WHERE status != 'done' AND EXISTS (SELECT 1 FROM policy_runs AS older "
        "WHERE older.repo_id = policy_runs.repo_id AND older.policy = policy_runs.policy "
        "AND older.status != 'done' AND (older.created < policy_runs.created "
        "OR (older.created = policy_runs.created AND older.id < policy_runs.id)))").bindparams(report))
    # their items too: no worker claims an item of a finished run, and the queue metric must not count it
    op.execute(sa.text(
        "UPDATE policy_items SET status = 'done', result = 'failed' WHERE status != 'done' "
        "AND run_id IN (SELECT id FROM policy_runs WHERE status = 'done')"))
    op.create_index("uq_policy_runs_unfinished", "policy_runs", ["repo_id", "policy"], unique=True,
                    postgresql_where=UNFINISHED, sqlite_where=UNFINISHED)


def downgrade() -> None:
    op.drop_index("uq_policy_runs_unfinished", table_name="policy_runs")
