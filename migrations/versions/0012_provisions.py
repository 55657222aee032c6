"""provisions

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 14:51:10.962636
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('provisions',
    sa.Column('org_id', sa.Uuid(), nullable=False),
    sa.Column('environment_id', sa.Uuid(), nullable=False),
    sa.Column('provider_id', sa.Uuid(), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('stack', sa.String(length=255), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('resource_id', sa.Uuid(), nullable=True),
    sa.Column('requested_by', sa.Uuid(), nullable=True),
    sa.Column('plan', sa.JSON(), nullable=False),
    sa.Column('estimate_monthly', sa.Numeric(precision=14, scale=4), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('violations', sa.JSON(), nullable=False),
    sa.Column('approval_reason', sa.Text(), nullable=True),
    sa.Column('decisions', sa.JSON(), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('expires_at', core.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('destroy_at', core.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', core.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('workflow_id', sa.String(length=255), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', core.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', core.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('updated_by', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_provisions_environment_id_environments')),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_provisions_org_id_organizations')),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_provisions_provider_id_providers')),
    sa.ForeignKeyConstraint(['requested_by'], ['users.id'], name=op.f('fk_provisions_requested_by_users')),
    sa.ForeignKeyConstraint(['resource_id'], ['resources.id'], name=op.f('fk_provisions_resource_id_resources')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provisions'))
    )
    with op.batch_alter_table('provisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provisions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_provisions_environment_id'), ['environment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_provisions_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_provisions_status'), ['status'], unique=False)

    op.create_table('provision_log_chunks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('provision_id', sa.Uuid(), nullable=False),
    sa.Column('first_seq', sa.Integer(), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('lines', sa.JSON(), nullable=False),
    sa.Column('created_at', core.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['provision_id'], ['provisions.id'], name=op.f('fk_provision_log_chunks_provision_id_provisions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provision_log_chunks')),
    sa.UniqueConstraint('provision_id', 'first_seq', name=op.f('uq_provision_log_chunks_provision_id_first_seq'))
    )
    with op.batch_alter_table('provision_log_chunks', schema=None) as batch_op:
        batch_op.create_index('ix_provision_log_chunks_provision_id_id', ['provision_id', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('provision_log_chunks', schema=None) as batch_op:
        batch_op.drop_index('ix_provision_log_chunks_provision_id_id')

    op.drop_table('provision_log_chunks')
    with op.batch_alter_table('provisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provisions_status'))
        batch_op.drop_index(batch_op.f('ix_provisions_org_id'))
        batch_op.drop_index(batch_op.f('ix_provisions_environment_id'))
        batch_op.drop_index(batch_op.f('ix_provisions_created_at'))

    op.drop_table('provisions')
