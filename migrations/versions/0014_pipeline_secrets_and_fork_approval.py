"""pipeline secrets and fork approval

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 16:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("from_fork", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("approved_by", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("approved_at", core.db.types.UTCDateTime(timezone=True), nullable=True)
        )

    op.create_table(
        "pipeline_secrets",
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_pipeline_secrets_pipeline_id_pipelines"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_secrets")),
        sa.UniqueConstraint(
            "pipeline_id", "name", name=op.f("uq_pipeline_secrets_pipeline_id_name")
        ),
    )
    with op.batch_alter_table("pipeline_secrets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_secrets_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pipeline_secrets_pipeline_id"), ["pipeline_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("pipeline_secrets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_secrets_pipeline_id"))
        batch_op.drop_index(batch_op.f("ix_pipeline_secrets_created_at"))
    op.drop_table("pipeline_secrets")
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_column("approved_at")
        batch_op.drop_column("approved_by")
        batch_op.drop_column("from_fork")
