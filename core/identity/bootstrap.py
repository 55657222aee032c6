"""The first administrator: from `idp users create-admin` or IDP_ADMIN_EMAIL/PASSWORD."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import context
from core.errors import Conflict
from core.identity.users import UserService
from core.models.identity import User


async def create_admin(session: AsyncSession, email: str, password: str, name: str = "") -> User:
    """Create (or, if the email exists, promote) a user with the global admin role."""
    users = UserService(session)
    with context.bound(actor_type="system", actor_label="bootstrap"):
        user = await users.by_email(email)
        if user is not None and user.is_deleted:
            raise Conflict(f"user {user.email} is deleted; restore it or use another email")
        if user is None:
            user = await users.create(email, name or "Administrator", password)
        await users.grant_role(user, "admin")
    return user


async def ensure_first_admin(
    session: AsyncSession, email: str | None, password: str | None
) -> bool:
    """On first start (no users at all), create the admin named by the settings."""
    if not email or not password:
        return False
    if (await session.scalar(select(func.count()).select_from(User))) or 0:
        return False
    await create_admin(session, email, password)
    return True
