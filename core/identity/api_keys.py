"""API keys: created with a subset of the creator's permissions, shown once, stored hashed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.db.types import utcnow
from core.errors import Forbidden, NotFound, ValidationFailed
from core.models.identity import ApiKey
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import Principal
from core.security.permissions import unknown_permissions
from core.security.tokens import API_KEY_PREFIX, new_opaque_token, token_hash

DISPLAY_PREFIX_LENGTH = len(API_KEY_PREFIX) + 6


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # returned once, never stored


class ApiKeyService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def create(
        self,
        creator: Principal,
        name: str,
        permissions: list[str],
        expires_at: datetime | None,
    ) -> CreatedKey:
        if creator.kind != "user":
            raise Forbidden("API keys cannot create API keys; log in as a user")
        unknown = unknown_permissions(permissions)
        if unknown:
            raise ValidationFailed(f"unknown permission {unknown[0]}", details={"unknown": unknown})
        beyond = sorted(set(permissions) - creator.held_permissions())
        if beyond:
            raise Forbidden(
                f"a key cannot have permissions its creator lacks: {', '.join(beyond)}",
                details={"permissions": beyond},
            )
        if expires_at is not None and expires_at <= utcnow():
            raise ValidationFailed("expires_at must be in the future")
        secret = new_opaque_token(API_KEY_PREFIX)
        key = ApiKey(
            user_id=creator.user_id,
            name=name.strip(),
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            key_hash=token_hash(secret),
            permissions=sorted(set(permissions)),
            expires_at=expires_at,
        )
        self.session.add(key)
        await self.session.flush()
        await self.audit.record("api_key.create", "api_key", key.id, after=snapshot(key))
        return CreatedKey(key, secret)

    async def list(
        self, user_id: uuid.UUID | None, page: PageRequest, *, include_revoked: bool = False
    ) -> Page[ApiKey]:
        stmt = select(ApiKey)
        if user_id is not None:
            stmt = stmt.where(ApiKey.user_id == user_id)
        if not include_revoked:
            stmt = stmt.where(ApiKey.revoked_at.is_(None))
        return await paginate(self.session, stmt, page, order=(ApiKey.created_at, ApiKey.id))

    async def get(self, key_id: uuid.UUID) -> ApiKey:
        key = await self.session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"API key {key_id} not found")
        return key

    async def revoke(self, key: ApiKey) -> None:
        if key.revoked_at is not None:
            return
        before = snapshot(key)
        key.revoked_at = utcnow()
        await self.session.flush()
        await self.audit.record(
            "api_key.delete", "api_key", key.id, before=before, after=snapshot(key)
        )
