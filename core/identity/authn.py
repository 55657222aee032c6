"""Authentication: who presents this bearer token or API key?"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.types import utcnow
from core.errors import Unauthorized
from core.identity.grants import load_grants
from core.models.identity import ApiKey, User
from core.security.authorization import Principal
from core.security.tokens import (
    ACCESS,
    API_KEY_PREFIX,
    decode_access_token,
    token_hash,
)

# Writing last_used on every request would make each call a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _usable(user: User | None) -> User:
    if user is None or user.is_deleted:
        raise Unauthorized("the account no longer exists", code="invalid_token")
    if user.status != "active":
        raise Unauthorized("the account is disabled", code="account_disabled")
    return user


async def authenticate(
    session: AsyncSession, jwt_secret: str, credential: str, typ: str = ACCESS
) -> Principal:
    """Resolve an access token or an API key (or, with `typ=CODEC_SESSION`, the Temporal UI's
    codec session cookie) to a principal with its current grants."""
    if typ == ACCESS and credential.startswith(API_KEY_PREFIX):
        return await _authenticate_key(session, credential)
    claims = decode_access_token(jwt_secret, credential, typ)
    user = _usable(await session.get(User, claims.user_id))
    label = user.email if typ == ACCESS else f"{user.email} (codec session)"
    return Principal(user_id=user.id, label=label, grants=await load_grants(session, user.id))


async def _authenticate_key(session: AsyncSession, credential: str) -> Principal:
    key = (
        await session.scalars(select(ApiKey).where(ApiKey.key_hash == token_hash(credential)))
    ).first()
    if key is None:
        raise Unauthorized("API key is not valid", code="invalid_api_key")
    if key.revoked_at is not None:
        raise Unauthorized("API key has been revoked", code="invalid_api_key")
    now = utcnow()
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("API key has expired", code="invalid_api_key")
    user = _usable(await session.get(User, key.user_id))
    if key.last_used is None or now - key.last_used >= LAST_USED_RESOLUTION:
        key.last_used = now
    return Principal(
        user_id=user.id,
        label=f"{key.name} (API key of {user.email})",
        kind="api_key",
        grants=await load_grants(session, user.id),
        key_id=key.id,
        key_permissions=frozenset(key.permissions),
    )
