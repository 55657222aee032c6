"""Login, refresh-token rotation with reuse detection, and logout.

Refresh tokens form a family from one login. Each refresh marks the presented token rotated
and issues its successor; presenting a rotated token again means it was copied, so the whole
family is revoked (the thief's and the user's sessions both end, the user logs in again).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import context
from core.audit import AuditService
from core.db.types import utcnow
from core.errors import RateLimited, Unauthorized
from core.identity.mfa import MfaService
from core.identity.users import UserService
from core.models.identity import RefreshToken, User
from core.security.passwords import hash_password, needs_rehash, verify_password
from core.security.tokens import REFRESH_PREFIX, issue_access_token, new_opaque_token, token_hash

LOCK_AFTER_FAILURES = 5
FIRST_LOCK = timedelta(seconds=30)
MAX_LOCK = timedelta(hours=1)
_INVALID = "invalid email or password"


def lock_duration(failures: int) -> timedelta:
    """30 s after the 5th consecutive failure, doubling with each further one, at most 1 h."""
    if failures < LOCK_AFTER_FAILURES:
        return timedelta(0)
    return min(FIRST_LOCK * 2 ** min(failures - LOCK_AFTER_FAILURES, 16), MAX_LOCK)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


@dataclass(frozen=True)
class TokenPolicy:
    secret: str
    access_ttl: timedelta
    refresh_ttl: timedelta


class AuthService:
    def __init__(self, session: AsyncSession, policy: TokenPolicy) -> None:
        self.session = session
        self.policy = policy
        self.audit = AuditService(session)

    async def _issue(self, user: User, family_id: uuid.UUID | None = None) -> TokenPair:
        access, access_expires = issue_access_token(
            self.policy.secret, user.id, self.policy.access_ttl
        )
        refresh = new_opaque_token(REFRESH_PREFIX)
        expires = utcnow() + self.policy.refresh_ttl
        self.session.add(
            RefreshToken(
                user_id=user.id,
                family_id=family_id or uuid.uuid4(),
                token_hash=token_hash(refresh),
                expires_at=expires,
            )
        )
        await self.session.flush()
        return TokenPair(access, access_expires, refresh, expires)

    async def login(self, email: str, password: str, mfa_code: str | None = None) -> TokenPair:
        user = await UserService(self.session).by_email(email)
        now = utcnow()
        with context.bound(
            actor_id=user.id if user else None, actor_type="user", actor_label=email.strip().lower()
        ):
            if user is not None and user.locked_until is not None and user.locked_until > now:
                wait = int((user.locked_until - now).total_seconds()) + 1
                await self.audit.record("auth.login.locked", "user", user.id)
                raise RateLimited(
                    f"account is locked after repeated failed logins; try again in {wait}s",
                    details={"retry_after": wait},
                    headers={"Retry-After": str(wait)},
                    keep_changes=True,
                )
            valid = verify_password(user.password_hash if user else None, password)
            if user is None or user.is_deleted or not valid:
                if user is not None and not user.is_deleted:
                    self._count_failure(user, now)
                await self.audit.record(
                    "auth.login.failure",
                    "user",
                    user.id if user else None,
                    after={"email": email.strip().lower()},
                )
                raise Unauthorized(_INVALID, code="invalid_credentials", keep_changes=True)
            if user.status != "active":
                await self.audit.record("auth.login.disabled", "user", user.id)
                raise Unauthorized(
                    "the account is disabled", code="account_disabled", keep_changes=True
                )
            if user.mfa_enabled:
                await self._second_factor(user, mfa_code, now)
            user.failed_login_count, user.locked_until, user.last_login_at = 0, None, now
            if user.password_hash and needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            pair = await self._issue(user)
            await self.audit.record("auth.login.success", "user", user.id)
            return pair

    async def login_sso(self, user: User, provider: str) -> TokenPair:
        """Tokens for `user`, whom the SSO `provider` has just authenticated (core/identity/
        sso.py): the provider stands in for the password and the second factor, but a locked,
        disabled or deleted account is still refused."""
        now = utcnow()
        with context.bound(actor_id=user.id, actor_type="user", actor_label=user.email):
            if user.locked_until is not None and user.locked_until > now:
                wait = int((user.locked_until - now).total_seconds()) + 1
                raise RateLimited(
                    f"account is locked after repeated failed logins; try again in {wait}s",
                    details={"retry_after": wait},
                    headers={"Retry-After": str(wait)},
                )
            if user.is_deleted or user.status != "active":
                raise Unauthorized("the account is disabled", code="account_disabled")
            user.last_login_at = now
            pair = await self._issue(user)
            await self.audit.record("auth.sso.login", "user", user.id, after={"provider": provider})
            return pair

    @staticmethod
    def _count_failure(user: User, now: datetime) -> None:
        user.failed_login_count += 1
        lock = lock_duration(user.failed_login_count)
        if lock:
            user.locked_until = now + lock

    async def _second_factor(self, user: User, code: str | None, now: datetime) -> None:
        if not code:
            raise Unauthorized(
                "this account uses MFA: send totp_code (or a recovery code) with the password",
                code="mfa_required",
            )
        if not await MfaService(self.session).check(user, code):
            self._count_failure(user, now)
            await self.audit.record("auth.login.failure", "user", user.id, after={"mfa": True})
            raise Unauthorized(
                "the MFA code does not match", code="invalid_mfa_code", keep_changes=True
            )

    async def refresh(self, presented: str) -> TokenPair:
        token = await self._find(presented)
        now = utcnow()
        with context.bound(actor_id=token.user_id, actor_type="user"):
            if token.revoked_at is not None:
                raise Unauthorized("refresh token has been revoked", code="invalid_refresh_token")
            if token.rotated_at is not None:
                await self.revoke_family(token.family_id, "reuse")
                await self.audit.record(
                    "auth.refresh.reuse_detected",
                    "user",
                    token.user_id,
                    after={"family_id": token.family_id},
                )
                raise Unauthorized(
                    "refresh token was already used; every session from this login is revoked",
                    code="refresh_token_reused",
                    keep_changes=True,
                )
            if token.expires_at <= now:
                raise Unauthorized(
                    "refresh token has expired; log in again", code="invalid_refresh_token"
                )
            user = await self.session.get(User, token.user_id)
            if user is None or user.is_deleted or user.status != "active":
                await self.revoke_family(token.family_id, "disabled")
                raise Unauthorized(
                    "the account is disabled", code="account_disabled", keep_changes=True
                )
            token.rotated_at = now
            pair = await self._issue(user, token.family_id)
            await self.audit.record("auth.refresh", "user", user.id)
            return pair

    async def logout(self, presented: str) -> None:
        token = await self._find(presented)
        await self.revoke_family(token.family_id, "logout")
        with context.bound(actor_id=token.user_id, actor_type="user"):
            await self.audit.record("auth.logout", "user", token.user_id)

    async def _find(self, presented: str) -> RefreshToken:
        token = (
            await self.session.scalars(
                select(RefreshToken).where(RefreshToken.token_hash == token_hash(presented))
            )
        ).first()
        if token is None:
            raise Unauthorized("refresh token is not valid", code="invalid_refresh_token")
        return token

    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
        )
