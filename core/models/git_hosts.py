"""Git host connections of an organization, and the repositories bound to one organization.

A connection is an organization's own credentials for one Git host: an API token (clones,
commit statuses, proof that the organization can see a repository) and a webhook secret (the
host signs its deliveries with it). Both are encrypted with the key ring, their associated data
bound to the row's id, so a ciphertext copied onto another row does not decrypt.

A repository (`host/path` in lower case, the catalog's key) is bound to at most one
organization: the unique `repository` column is what refuses a second organization."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base, Entity
from core.db.types import utcnow


class GitHostConnection(Entity):
    __tablename__ = "git_host_connections"
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        UniqueConstraint("org_id", "host"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # github | gitlab | bitbucket
    host: Mapped[str] = mapped_column(String(255))  # as in repository keys: github.com
    name: Mapped[str] = mapped_column(String(63))
    token: Mapped[str | None] = mapped_column(Text)  # enc:v1:…, AAD bound to the id
    webhook_secret: Mapped[str] = mapped_column(Text)  # enc:v1:…, AAD bound to the id
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(default=None)


class RepositoryBinding(Base):
    """`repository` belongs to `org_id`, proven through `connection_id`. A binding the 0013
    migration made for existing services has no connection until the organization adds one
    for the host (then it is attached to it)."""

    __tablename__ = "repository_bindings"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    repository: Mapped[str] = mapped_column(String(1024), unique=True)  # host/path, lower case
    host: Mapped[str] = mapped_column(String(255))
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    connection_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("git_host_connections.id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
