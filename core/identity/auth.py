"""Login, refresh-token rotation with reuse detection, and logout.

Refresh tokens form a family from one login. Each refresh marks the presented token rotated
and issues its successor; presenting a rotated token again means it was copied, so the whole
family is revoked (the thief's and the user's sessions both end, the user logs in again).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from core import context
from core.audit import AuditService
from core.db.types import utcnow
from core.errors import Unauthorized
from core.identity.mfa import MfaService
from core.identity.users import UserService
from core.models.identity import RefreshToken, User
from core.security.authorization import Grant
from core.security.passwords import hash_password, needs_rehash, verify_password
from core.security.tokens import REFRESH_PREFIX, issue_access_token, new_opaque_token, token_hash

LOCK_AFTER_FAILURES = 5
FIRST_LOCK = timedelta(seconds=30)
MAX_LOCK = timedelta(hours=1)
_INVALID = "invalid email or password"
_INVALID_WITH_CODE = "invalid email, password or MFA code"
_INVALID_CODE = "the MFA code is not valid"


def lock_duration(failures: int) -> timedelta:
    """30 s after the 5th consecutive failure, doubling with each further one, at most 1 h."""
    if failures < LOCK_AFTER_FAILURES:
        return timedelta(0)
    return min(FIRST_LOCK * 2 ** min(failures - LOCK_AFTER_FAILURES, 16), MAX_LOCK)


def is_privileged(grants: Iterable[Grant]) -> bool:
    """Privileged: the `admin` role platform-wide or over an organization, or any grant that
    can manage users and their roles (`users:admin`). Such a user with MFA on passes the
    platform's second factor even after an SSO login."""
    return any(
        (g.role == "admin" and g.scope in ("global", "organization"))
        or "users:admin" in g.permissions
        for g in grants
    )


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
        """A password login (and the second factor when the account has MFA on).

        Refusals reveal as little as they can: an unknown email, a wrong password and a locked
        account get the same 401 `invalid_credentials` (after the same password hashing); an
        account with MFA answers `mfa_required` to any password until a code is sent, and then
        a wrong password and a wrong code are the same refusal."""
        user = await UserService(self.session).by_email(email)
        now = utcnow()
        invalid = _INVALID_WITH_CODE if mfa_code else _INVALID
        with context.bound(
            actor_id=user.id if user else None, actor_type="user", actor_label=email.strip().lower()
        ):
            valid = verify_password(user.password_hash if user else None, password)
            if user is None or user.is_deleted:
                await self._failure(None, email)
                raise Unauthorized(invalid, code="invalid_credentials", keep_changes=True)
            if user.mfa_enabled and not mfa_code:
                # The same answer whether or not the password is right: it is judged with
                # the code. A wrong one still counts towards the lock.
                if not valid and not self._locked(user, now):
                    await self._count_failure(user.id, now)
                    await self._failure(user.id, email)
                raise Unauthorized(
                    "this account uses MFA: send totp_code (or a recovery code) with the password",
                    code="mfa_required",
                    keep_changes=True,
                )
            if self._locked(user, now):
                await self.audit.record("auth.login.locked", "user", user.id)
                raise Unauthorized(invalid, code="invalid_credentials", keep_changes=True)
            if not valid:
                await self._count_failure(user.id, now)
                await self._failure(user.id, email)
                raise Unauthorized(invalid, code="invalid_credentials", keep_changes=True)
            if user.mfa_enabled and not await self._second_factor(user, mfa_code or "", now):
                raise Unauthorized(invalid, code="invalid_credentials", keep_changes=True)
            if user.status != "active":
                await self.audit.record("auth.login.disabled", "user", user.id)
                raise Unauthorized(
                    "the account is disabled", code="account_disabled", keep_changes=True
                )
            await self._reset_failures(user, last_login_at=now)
            if user.password_hash and needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            pair = await self._issue(user)
            await self.audit.record("auth.login.success", "user", user.id)
            return pair

    async def login_sso(self, user: User, provider: str) -> TokenPair:
        """Tokens for `user`, whom the SSO `provider` has just authenticated (core/identity/
        sso.py). The password lock does not apply (whoever guesses passwords cannot lock a
        user out of SSO); a disabled or deleted account is refused. The caller has checked
        that a privileged user with MFA on has also passed the platform's second factor
        (`needs_platform_mfa`, `check_sso_second_factor`)."""
        now = utcnow()
        with context.bound(actor_id=user.id, actor_type="user", actor_label=user.email):
            if user.is_deleted or user.status != "active":
                raise Unauthorized("the account is disabled", code="account_disabled")
            user.last_login_at = now
            pair = await self._issue(user)
            await self.audit.record("auth.sso.login", "user", user.id, after={"provider": provider})
            return pair

    async def check_sso_second_factor(self, user: User, code: str) -> None:
        """The platform's second factor after an SSO login (privileged users with MFA on). A
        wrong code counts towards the lock like a wrong password, and while the account is
        locked no code is accepted (codes cannot be guessed past the lock)."""
        now = utcnow()
        with context.bound(actor_id=user.id, actor_type="user", actor_label=user.email):
            if user.is_deleted or user.status != "active":
                raise Unauthorized("the account is disabled", code="account_disabled")
            if self._locked(user, now):
                await self.audit.record("auth.login.locked", "user", user.id, after={"mfa": True})
                raise Unauthorized(_INVALID_CODE, code="invalid_mfa_code", keep_changes=True)
            if not await self._second_factor(user, code, now):
                raise Unauthorized(_INVALID_CODE, code="invalid_mfa_code", keep_changes=True)
            await self._reset_failures(user)

    @staticmethod
    def _locked(user: User, now: datetime) -> bool:
        return user.locked_until is not None and user.locked_until > now

    async def _failure(self, user_id: uuid.UUID | None, email: str, **extra: object) -> None:
        await self.audit.record(
            "auth.login.failure",
            "user",
            user_id,
            after={"email": email.strip().lower(), **extra},
        )

    async def _count_failure(self, user_id: uuid.UUID, now: datetime) -> int:
        """One more consecutive failure, counted by the database in one statement (parallel
        guesses cannot overwrite each other's count); the lock follows the count returned."""
        failures = int(
            (
                await self.session.execute(
                    update(User)
                    .where(User.id == user_id)
                    .values(failed_login_count=User.failed_login_count + 1)
                    .returning(User.failed_login_count)
                    .execution_options(synchronize_session=False)
                )
            ).scalar_one()
        )
        lock = lock_duration(failures)
        if lock:
            # Only for the latest count: a slower request never shortens a longer lock.
            await self.session.execute(
                update(User)
                .where(User.id == user_id, User.failed_login_count == failures)
                .values(locked_until=now + lock)
                .execution_options(synchronize_session=False)
            )
        return failures

    async def _reset_failures(self, user: User, **values: object) -> None:
        """Back to no failures, whatever count parallel requests reached meanwhile."""
        values = {"failed_login_count": 0, "locked_until": None, **values}
        await self.session.execute(
            update(User)
            .where(User.id == user.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        for name, value in values.items():
            set_committed_value(user, name, value)

    async def _second_factor(self, user: User, code: str, now: datetime) -> bool:
        if await MfaService(self.session).check(user, code):
            return True
        await self._count_failure(user.id, now)
        await self._failure(user.id, user.email, mfa=True)
        return False

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
