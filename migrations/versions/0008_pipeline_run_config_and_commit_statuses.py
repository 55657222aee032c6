"""pipeline run config and commit statuses

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 08:49:50.823102
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("config", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("commit_statuses", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_column("commit_statuses")
        batch_op.drop_column("config")
