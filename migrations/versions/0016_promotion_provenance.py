"""promotion provenance

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 16:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("branch_from_host", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # Runs a push delivery or a schedule started took branch and commit from the Git host;
    # a manual run may have named its commit, so it is not trusted after the fact.
    op.execute(
        sa.text(
            "UPDATE pipeline_runs SET branch_from_host = :yes "
            "WHERE trigger_type IN ('push', 'cron')"
        ).bindparams(yes=True)
    )
    with op.batch_alter_table("service_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pipeline_run_id", sa.Uuid(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_service_versions_pipeline_run_id"), ["pipeline_run_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_service_versions_pipeline_run_id_pipeline_runs"),
            "pipeline_runs",
            ["pipeline_run_id"],
            ["id"],
        )
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("git_sha", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("pipeline_run_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("provenance", sa.Text(), server_default="no provenance", nullable=False)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_promotions_pipeline_run_id_pipeline_runs"),
            "pipeline_runs",
            ["pipeline_run_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_promotions_pipeline_run_id_pipeline_runs"), type_="foreignkey"
        )
        batch_op.drop_column("provenance")
        batch_op.drop_column("pipeline_run_id")
        batch_op.drop_column("git_sha")
    with op.batch_alter_table("service_versions", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_service_versions_pipeline_run_id_pipeline_runs"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_service_versions_pipeline_run_id"))
        batch_op.drop_column("pipeline_run_id")
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_column("branch_from_host")
