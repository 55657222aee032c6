"""kubernetes ownership

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 16:45:00.000000

The allow-list of kubeconfig contexts per organization (`kubernetes_contexts`). Existing
environments keep what they have: their namespace is not re-derived (objects already running
there stay where they are), and each context a live environment names is added to its
organization's allow-list, so its deploys go on; a platform admin reviews the list
(`GET /organizations/{id}/kubernetes-contexts`) and removes what should not be there.
Objects deployed before this change carry no `idp.dev/environment-id` label: the next deploy
refuses to take them over until they are labelled (docs/environments.md says how).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    contexts = op.create_table(
        "kubernetes_contexts",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("context", sa.String(length=255), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_kubernetes_contexts_org_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kubernetes_contexts")),
        sa.UniqueConstraint(
            "org_id", "context", name=op.f("uq_kubernetes_contexts_org_id_context")
        ),
    )
    with op.batch_alter_table("kubernetes_contexts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_kubernetes_contexts_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_kubernetes_contexts_org_id"), ["org_id"], unique=False)

    environments = sa.table(
        "environments",
        sa.column("org_id", sa.Uuid()),
        sa.column("cluster_id", sa.String()),
        sa.column("deleted_at", core.db.types.UTCDateTime(timezone=True)),
    )
    named = op.get_bind().execute(
        sa.select(environments.c.org_id, environments.c.cluster_id)
        .where(environments.c.cluster_id.is_not(None), environments.c.deleted_at.is_(None))
        .distinct()
    )
    now = core.db.types.utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "org_id": org_id,
            "context": context,
            "created_at": now,
            "updated_at": now,
        }
        for org_id, context in named
    ]
    if rows:
        op.bulk_insert(contexts, rows)


def downgrade() -> None:
    with op.batch_alter_table("kubernetes_contexts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kubernetes_contexts_org_id"))
        batch_op.drop_index(batch_op.f("ix_kubernetes_contexts_created_at"))
    op.drop_table("kubernetes_contexts")
