"""identity edges: verified Slack links, server-assigned references, row-bound secrets

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 16:45:00.000000

- `slack_links` (verified: platform user <-> Slack member of one workspace) and
  `slack_link_challenges` (the pending one-time codes, hashed).
- References are assigned by the platform only: the `reference` of every delivery sent
  through `POST /notifications` (its request id is in the audit log as `notification.send`)
  is cleared, so a reference a caller chose earlier (`promotion:<another org's id>`) can no
  longer be matched to a promotion or provisioning run.
- Channel secrets and provider credentials were encrypted with a constant associated data;
  they are re-encrypted bound to their row id (`core.security.encryption.row_aad`), so a
  ciphertext copied to another row no longer decrypts. This needs the key ring (the one the
  process installed, else ENCRYPTION_KEY from the settings) only when such rows exist: on a
  fresh database it is a no-op.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

import core.db.types

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# (table, column, purpose, the constant associated data used before this revision)
_ENCRYPTED = (
    (
        "notification_channels",
        "secrets",
        "notification_channels.secrets",
        b"notification_channels.secrets",
    ),
    ("providers", "credentials", "providers.credentials", b"providers.credentials"),
)


def _entity_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "slack_links",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("slack_team_id", sa.String(length=32), nullable=False),
        sa.Column("slack_user_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("verified_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        *_entity_columns(),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["notification_channels.id"],
            name=op.f("fk_slack_links_channel_id_notification_channels"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_slack_links_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slack_links")),
        sa.UniqueConstraint(
            "slack_team_id",
            "slack_user_id",
            name=op.f("uq_slack_links_slack_team_id_slack_user_id"),
        ),
        sa.UniqueConstraint(
            "user_id", "slack_team_id", name=op.f("uq_slack_links_user_id_slack_team_id")
        ),
    )
    with op.batch_alter_table("slack_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slack_links_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_slack_links_user_id"), ["user_id"], unique=False)

    op.create_table(
        "slack_link_challenges",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("slack_team_id", sa.String(length=32), nullable=False),
        sa.Column("slack_user_id", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        *_entity_columns(),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["notification_channels.id"],
            name=op.f("fk_slack_link_challenges_channel_id_notification_channels"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_slack_link_challenges_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slack_link_challenges")),
        sa.UniqueConstraint("user_id", name=op.f("uq_slack_link_challenges_user_id")),
    )
    with op.batch_alter_table("slack_link_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_slack_link_challenges_created_at"), ["created_at"], unique=False
        )

    _clear_caller_references()
    _reencrypt(to_row_bound=True)


def downgrade() -> None:
    _reencrypt(to_row_bound=False)
    with op.batch_alter_table("slack_link_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_link_challenges_created_at"))
    op.drop_table("slack_link_challenges")
    with op.batch_alter_table("slack_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_links_user_id"))
        batch_op.drop_index(batch_op.f("ix_slack_links_created_at"))
    op.drop_table("slack_links")


def _clear_caller_references() -> None:
    conn = op.get_bind()
    sent = conn.execute(
        sa.text(
            "SELECT resource_id FROM audit_logs "
            "WHERE action = 'notification.send' AND resource_id IS NOT NULL"
        )
    ).scalars()
    request_ids = []
    for value in sent:
        try:
            request_ids.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    notifications = sa.table(
        "notifications",
        sa.column("request_id", sa.Uuid()),
        sa.column("reference", sa.String(200)),
    )
    for start in range(0, len(request_ids), 500):
        chunk = request_ids[start : start + 500]
        conn.execute(
            notifications.update()
            .where(notifications.c.request_id.in_(chunk), notifications.c.reference.is_not(None))
            .values(reference=None)
        )


def _keyring() -> object:
    """The process's installed ring (`idp migrate`, `idp dev`, the tests install one), else
    one from the settings (ENCRYPTION_KEY, or the development key in local-secrets.json)."""
    from core.security.encryption import KeyRing, installed_keyring

    try:
        return installed_keyring()
    except RuntimeError:
        from core.local_secrets import with_local_secrets
        from core.settings import Settings

        return KeyRing.from_settings(with_local_secrets(Settings()))


def _reencrypt(*, to_row_bound: bool) -> None:
    from core.security.encryption import DecryptionError, KeyRing, row_aad

    conn = op.get_bind()
    ring: KeyRing | None = None
    for table_name, column, purpose, constant in _ENCRYPTED:
        table = sa.table(table_name, sa.column("id", sa.Uuid()), sa.column(column, sa.Text()))
        rows = conn.execute(
            sa.select(table.c.id, table.c[column]).where(table.c[column].is_not(None))
        ).all()
        for row_id, token in rows:
            if ring is None:
                found = _keyring()
                assert isinstance(found, KeyRing)
                ring = found
            bound = row_aad(purpose, row_id)
            old, new = (constant, bound) if to_row_bound else (bound, constant)
            try:
                plain = ring.decrypt_str(token, aad=old)
            except DecryptionError:
                try:
                    ring.decrypt_str(token, aad=new)  # already in the target form: a re-run
                    continue
                except DecryptionError:
                    raise RuntimeError(
                        f"cannot re-encrypt {table_name}.{column} of row {row_id}: it does not "
                        "decrypt with the key ring (set ENCRYPTION_KEY, and any older key in "
                        "ENCRYPTION_KEYS_PREVIOUS)"
                    ) from None
            conn.execute(
                table.update()
                .where(table.c.id == row_id)
                .values({column: ring.encrypt_str(plain, aad=new)})
            )
