"""git host connections

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 16:45:00.000000

Git host connections per organization, and repository bindings (a repository belongs to at
most one organization). Existing services with a repository: each repository is bound to the
organization whose live service registered it first, without a connection; that organization
attaches it by adding a connection for the host. Other organizations' services keep their URL,
but webhooks reach only the bound organization and their runs fail at checkout.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "git_host_connections",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("token", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=False),
        sa.Column(
            "webhook_secret_rotated_at", core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_git_host_connections_org_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_git_host_connections")),
        sa.UniqueConstraint("org_id", "host", name=op.f("uq_git_host_connections_org_id_host")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_git_host_connections_org_id_name")),
    )
    with op.batch_alter_table("git_host_connections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_git_host_connections_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_git_host_connections_org_id"), ["org_id"], unique=False
        )

    bindings = op.create_table(
        "repository_bindings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("repository", sa.String(length=1024), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["git_host_connections.id"],
            name=op.f("fk_repository_bindings_connection_id_git_host_connections"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_repository_bindings_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repository_bindings")),
        sa.UniqueConstraint("repository", name=op.f("uq_repository_bindings_repository")),
    )
    with op.batch_alter_table("repository_bindings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_repository_bindings_connection_id"), ["connection_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_repository_bindings_org_id"), ["org_id"], unique=False
        )

    # Existing services: the first organization to register a repository keeps it.
    services = sa.table(
        "services",
        sa.column("org_id", sa.Uuid()),
        sa.column("repository_path", sa.String()),
        sa.column("created_at", core.db.types.UTCDateTime(timezone=True)),
        sa.column("deleted_at", core.db.types.UTCDateTime(timezone=True)),
    )
    rows = op.get_bind().execute(
        sa.select(services.c.repository_path, services.c.org_id, services.c.created_at)
        .where(services.c.repository_path.is_not(None), services.c.deleted_at.is_(None))
        .order_by(services.c.created_at)
    )
    first: dict[str, tuple[uuid.UUID, object]] = {}
    for path, org_id, created_at in rows:
        first.setdefault(path, (org_id, created_at))
    if first:
        op.bulk_insert(
            bindings,
            [
                {
                    "id": uuid.uuid4(),
                    "repository": path,
                    "host": path.partition("/")[0],
                    "org_id": org_id,
                    "connection_id": None,
                    "created_at": created_at,
                }
                for path, (org_id, created_at) in first.items()
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("repository_bindings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repository_bindings_org_id"))
        batch_op.drop_index(batch_op.f("ix_repository_bindings_connection_id"))
    op.drop_table("repository_bindings")
    with op.batch_alter_table("git_host_connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_git_host_connections_org_id"))
        batch_op.drop_index(batch_op.f("ix_git_host_connections_created_at"))
    op.drop_table("git_host_connections")
