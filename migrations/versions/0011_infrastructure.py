"""infrastructure

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 12:32:39.341764
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=True),
        sa.Column("credential_names", sa.JSON(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("deleted_at", core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_providers_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
    )
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_providers_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_providers_deleted_at"), ["deleted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_providers_org_id"), ["org_id"], unique=False)
        batch_op.create_index(
            "uq_providers_org_id_name_live",
            ["org_id", "name"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.create_table(
        "budgets",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("environment_id", sa.Uuid(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=14, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("notified_month", sa.String(length=7), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("deleted_at", core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_budgets_environment_id_environments"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_budgets_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_budgets_team_id_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
    )
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budgets_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_budgets_deleted_at"), ["deleted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_budgets_org_id"), ["org_id"], unique=False)

    op.create_table(
        "resources",
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("environment_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("identifier", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("cost_monthly", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("stack", sa.String(length=255), nullable=True),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_resources_environment_id_environments"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_resources_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resources")),
        sa.UniqueConstraint(
            "provider_id", "identifier", name=op.f("uq_resources_provider_id_identifier")
        ),
    )
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_resources_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_resources_environment_id"), ["environment_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_resources_provider_id"), ["provider_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_resources_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_resources_type"), ["type"], unique=False)

    op.create_table(
        "cost_records",
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("cost", sa.Numeric(precision=14, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("usage_metrics", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name=op.f("fk_cost_records_resource_id_resources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_records")),
        sa.UniqueConstraint(
            "resource_id", "date", "source", name=op.f("uq_cost_records_resource_id_date_source")
        ),
    )
    with op.batch_alter_table("cost_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cost_records_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_cost_records_date"), ["date"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_cost_records_resource_id"), ["resource_id"], unique=False
        )

    op.create_table(
        "resource_relationships",
        sa.Column("parent_id", sa.Uuid(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("relationship_type", sa.String(length=30), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["resources.id"],
            name=op.f("fk_resource_relationships_child_id_resources"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["resources.id"],
            name=op.f("fk_resource_relationships_parent_id_resources"),
        ),
        sa.PrimaryKeyConstraint(
            "parent_id", "child_id", "relationship_type", name=op.f("pk_resource_relationships")
        ),
    )


def downgrade() -> None:
    op.drop_table("resource_relationships")
    with op.batch_alter_table("cost_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cost_records_resource_id"))
        batch_op.drop_index(batch_op.f("ix_cost_records_date"))
        batch_op.drop_index(batch_op.f("ix_cost_records_created_at"))

    op.drop_table("cost_records")
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resources_type"))
        batch_op.drop_index(batch_op.f("ix_resources_status"))
        batch_op.drop_index(batch_op.f("ix_resources_provider_id"))
        batch_op.drop_index(batch_op.f("ix_resources_environment_id"))
        batch_op.drop_index(batch_op.f("ix_resources_created_at"))

    op.drop_table("resources")
    with op.batch_alter_table("budgets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budgets_org_id"))
        batch_op.drop_index(batch_op.f("ix_budgets_deleted_at"))
        batch_op.drop_index(batch_op.f("ix_budgets_created_at"))

    op.drop_table("budgets")
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_providers_org_id_name_live",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_providers_org_id"))
        batch_op.drop_index(batch_op.f("ix_providers_deleted_at"))
        batch_op.drop_index(batch_op.f("ix_providers_created_at"))

    op.drop_table("providers")
