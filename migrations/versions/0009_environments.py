"""environments

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 10:20:25.930541
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("cluster_id", sa.String(length=255), nullable=True),
        sa.Column("namespace", sa.String(length=63), nullable=True),
        sa.Column("previous_id", sa.Uuid(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("deleted_at", core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_environments_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["previous_id"],
            ["environments.id"],
            name=op.f("fk_environments_previous_id_environments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
    )
    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_environments_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_environments_deleted_at"), ["deleted_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_environments_org_id"), ["org_id"], unique=False)
        batch_op.create_index(
            "uq_environments_org_id_name_live",
            ["org_id", "name"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.create_table(
        "environment_access",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("env_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("granted_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_environment_access_env_id_environments")
        ),
        sa.ForeignKeyConstraint(
            ["granted_by"], ["users.id"], name=op.f("fk_environment_access_granted_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_environment_access_team_id_teams")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_environment_access_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environment_access")),
        sa.UniqueConstraint(
            "env_id",
            "user_id",
            "team_id",
            name=op.f("uq_environment_access_env_id_user_id_team_id"),
        ),
    )
    with op.batch_alter_table("environment_access", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_environment_access_env_id"), ["env_id"], unique=False)

    op.create_table(
        "environment_configs",
        sa.Column("env_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("is_secret", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["env_id"], ["environments.id"], name=op.f("fk_environment_configs_env_id_environments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environment_configs")),
        sa.UniqueConstraint("env_id", "key", name=op.f("uq_environment_configs_env_id_key")),
    )
    with op.batch_alter_table("environment_configs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_environment_configs_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_environment_configs_env_id"), ["env_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("environment_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_environment_configs_env_id"))
        batch_op.drop_index(batch_op.f("ix_environment_configs_created_at"))

    op.drop_table("environment_configs")
    with op.batch_alter_table("environment_access", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_environment_access_env_id"))

    op.drop_table("environment_access")
    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_environments_org_id_name_live",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_environments_org_id"))
        batch_op.drop_index(batch_op.f("ix_environments_deleted_at"))
        batch_op.drop_index(batch_op.f("ix_environments_created_at"))

    op.drop_table("environments")
