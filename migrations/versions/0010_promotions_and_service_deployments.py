"""promotions and service deployments

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 11:30:49.792168
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotions",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("service_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=True),
        sa.Column("branch", sa.String(length=255), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("decisions", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("expires_at", core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=True),
        sa.Column("previous_version", sa.String(length=100), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_promotions_environment_id_environments"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_promotions_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["users.id"], name=op.f("fk_promotions_requested_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_promotions_service_id_services")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["service_versions.id"],
            name=op.f("fk_promotions_version_id_service_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotions")),
    )
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_promotions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_promotions_environment_id"), ["environment_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_promotions_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_promotions_service_id"), ["service_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_promotions_status"), ["status"], unique=False)

    op.create_table(
        "service_deployments",
        sa.Column("service_id", sa.Uuid(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("environment_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("deployed_at", core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("promotion_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_service_deployments_environment_id_environments"),
        ),
        sa.ForeignKeyConstraint(
            ["promotion_id"],
            ["promotions.id"],
            name=op.f("fk_service_deployments_promotion_id_promotions"),
        ),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_service_deployments_service_id_services")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["service_versions.id"],
            name=op.f("fk_service_deployments_version_id_service_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_deployments")),
    )
    with op.batch_alter_table("service_deployments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_deployments_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_service_deployments_environment_id"), ["environment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_service_deployments_service_id"), ["service_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_service_deployments_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("service_deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_deployments_status"))
        batch_op.drop_index(batch_op.f("ix_service_deployments_service_id"))
        batch_op.drop_index(batch_op.f("ix_service_deployments_environment_id"))
        batch_op.drop_index(batch_op.f("ix_service_deployments_created_at"))

    op.drop_table("service_deployments")
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promotions_status"))
        batch_op.drop_index(batch_op.f("ix_promotions_service_id"))
        batch_op.drop_index(batch_op.f("ix_promotions_org_id"))
        batch_op.drop_index(batch_op.f("ix_promotions_environment_id"))
        batch_op.drop_index(batch_op.f("ix_promotions_created_at"))

    op.drop_table("promotions")
