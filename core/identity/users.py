"""Users: creation, lookup, listing, changes, soft deletion and role grants."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.db.types import utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.models.environments import Environment
from core.models.identity import ApiKey, Organization, RefreshToken, Role, Team, User, UserRole
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import SCOPES, Grant
from core.security.passwords import hash_password

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
STATUSES = ("active", "disabled")


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise ValidationFailed(
            f"{email!r} is not an email address", details=[{"field": "email", "message": "invalid"}]
        )
    return email


async def organization_ids(
    session: AsyncSession, grants: Iterable[Grant], permission: str | None = None
) -> set[uuid.UUID]:
    """The organizations `grants` reach (only grants holding `permission`, when given): their
    organization grants, and the organizations of their team and environment grants."""
    held = [g for g in grants if g.scope_id and (permission is None or permission in g.permissions)]
    orgs = {g.scope_id for g in held if g.scope == "organization" and g.scope_id}
    teams = {g.scope_id for g in held if g.scope == "team"}
    environments = {g.scope_id for g in held if g.scope == "environment"}
    if teams:
        orgs |= set((await session.scalars(select(Team.org_id).where(Team.id.in_(teams)))).all())
    if environments:
        orgs |= set(
            (
                await session.scalars(
                    select(Environment.org_id).where(Environment.id.in_(environments))
                )
            ).all()
        )
    return orgs


@dataclass(frozen=True)
class UserFilter:
    q: str | None = None  # substring of email or name
    status: str | None = None
    include_deleted: bool = False


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, user_id: uuid.UUID, *, include_deleted: bool = False) -> User:
        user = await self.session.get(User, user_id)
        if user is None or (user.is_deleted and not include_deleted):
            raise NotFound(f"user {user_id} not found")
        return user

    async def by_email(self, email: str) -> User | None:
        return (
            await self.session.scalars(select(User).where(User.email == email.strip().lower()))
        ).first()

    async def create(
        self, email: str, name: str, password: str | None, *, status: str = "active"
    ) -> User:
        email = normalise_email(email)
        if await self.by_email(email) is not None:
            raise Conflict(f"a user with email {email} already exists", details={"email": email})
        user = User(
            email=email,
            name=name.strip() or email,
            password_hash=hash_password(password) if password is not None else None,
            status=status,
        )
        self.session.add(user)
        await self.session.flush()
        await self.audit.record("user.create", "user", user.id, after=snapshot(user))
        return user

    def _query(self, f: UserFilter) -> Select[User]:
        stmt = select(User)
        if not f.include_deleted:
            stmt = stmt.where(User.deleted_at.is_(None))
        if f.status:
            stmt = stmt.where(User.status == f.status)
        if f.q:
            like = f"%{f.q.lower()}%"
            stmt = stmt.where(or_(User.email.like(like), User.name.ilike(like)))
        return stmt

    async def list(self, f: UserFilter, page: PageRequest) -> Page[User]:
        return await paginate(self.session, self._query(f), page, order=(User.created_at, User.id))

    async def update(
        self,
        user: User,
        *,
        name: str | None = None,
        avatar_url: str | None = None,
        status: str | None = None,
        password: str | None = None,
    ) -> User:
        before = snapshot(user)
        if name is not None:
            user.name = name.strip() or user.name
        if avatar_url is not None:
            user.avatar_url = avatar_url or None
        if status is not None:
            if status not in STATUSES:
                raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}")
            user.status = status
            if status == "active":
                user.failed_login_count, user.locked_until = 0, None
        if password is not None:
            user.password_hash = hash_password(password)
        await self.session.flush()
        if status == "disabled" or password is not None:
            await self.revoke_sessions(user.id, "disabled" if status == "disabled" else "password")
        await self.audit.record("user.update", "user", user.id, before=before, after=snapshot(user))
        return user

    async def delete(self, user: User) -> None:
        before = snapshot(user)
        user.soft_delete()
        await self.session.flush()
        await self.revoke_sessions(user.id, "deleted")
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        await self.audit.record("user.delete", "user", user.id, before=before, after=snapshot(user))

    async def revoke_sessions(self, user_id: uuid.UUID, reason: str) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
        )

    # -- role grants -------------------------------------------------------------------------
    async def role_by_name(self, name: str) -> Role:
        role = (await self.session.scalars(select(Role).where(Role.name == name))).first()
        if role is None:
            raise NotFound(f"role {name!r} not found", details={"role": name})
        return role

    async def grant_role(
        self, user: User, role_name: str, scope: str = "global", scope_id: uuid.UUID | None = None
    ) -> UserRole:
        if scope not in SCOPES:
            raise ValidationFailed(f"scope must be one of {', '.join(SCOPES)}")
        if (scope == "global") != (scope_id is None):
            raise ValidationFailed("scope_id is required for a scoped grant, and only then")
        await self._check_scope_exists(scope, scope_id)
        role = await self.role_by_name(role_name)
        existing = (
            await self.session.scalars(
                select(UserRole).where(
                    UserRole.user_id == user.id,
                    UserRole.role_id == role.id,
                    UserRole.scope == scope,
                    UserRole.scope_id.is_(None)
                    if scope_id is None
                    else UserRole.scope_id == scope_id,
                )
            )
        ).first()
        if existing is not None:
            return existing
        grant = UserRole(user_id=user.id, role_id=role.id, scope=scope, scope_id=scope_id)
        self.session.add(grant)
        await self.session.flush()
        await self.audit.record(
            "user.role.grant",
            "user",
            user.id,
            after={"role": role.name, "scope": scope, "scope_id": scope_id, "grant_id": grant.id},
        )
        return grant

    async def _check_scope_exists(self, scope: str, scope_id: uuid.UUID | None) -> None:
        if scope_id is None or scope not in ("organization", "team"):
            return  # environments are checked once they exist
        found: Organization | Team | None = await self.session.get(
            Organization if scope == "organization" else Team, scope_id
        )
        if found is None or found.is_deleted:
            raise NotFound(f"{scope} {scope_id} not found", details={"scope_id": str(scope_id)})

    async def revoke_role(self, user: User, grant_id: uuid.UUID) -> None:
        grant = await self.session.get(UserRole, grant_id)
        if grant is None or grant.user_id != user.id:
            raise NotFound(f"role grant {grant_id} not found for this user")
        role = await self.session.get(Role, grant.role_id)
        await self.session.delete(grant)
        await self.session.flush()
        await self.audit.record(
            "user.role.revoke",
            "user",
            user.id,
            before={
                "role": role.name if role else None,
                "scope": grant.scope,
                "scope_id": grant.scope_id,
                "grant_id": grant.id,
            },
        )
