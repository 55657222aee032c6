"""Roles: the built-in ones (permissions in code, read-only) and custom ones (permissions in
their row). Granting a role to a user is core.identity.users.UserService.grant_role."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.identity.organizations import check_slug, flush_unique
from core.models.identity import Role, UserRole
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import GLOBAL, Principal
from core.security.permissions import BUILTIN_ROLES, unknown_permissions

ROLE_NAME_MAX_LENGTH = 60  # the roles.name column


def permissions_of(role: Role) -> list[str]:
    """A role's permissions in a stable order (built-in: from code; custom: from its row)."""
    if role.builtin and role.name in BUILTIN_ROLES:
        return list(BUILTIN_ROLES[role.name][1])
    return list(role.permissions)


def _check_permissions(permissions: list[str], by: Principal | None) -> list[str]:
    unknown = unknown_permissions(permissions)
    if unknown:
        raise ValidationFailed(
            f"unknown permission {unknown[0]}",
            details={"unknown": unknown},
        )
    if not permissions:
        raise ValidationFailed("a role needs at least one permission")
    if by is not None:
        # A role may be granted platform-wide: whoever defines it must hold all of it there.
        beyond = sorted({p for p in permissions if not by.can(p, GLOBAL)})
        if beyond:
            raise Forbidden(
                f"a role cannot have permissions you lack platform-wide: {', '.join(beyond)}",
                details={"permissions": beyond},
            )
    return list(dict.fromkeys(permissions))  # de-duplicated, order kept


class RoleService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, role_id: uuid.UUID) -> Role:
        role = await self.session.get(Role, role_id)
        if role is None:
            raise NotFound(f"role {role_id} not found", details={"id": str(role_id)})
        return role

    async def by_name(self, name: str) -> Role | None:
        return (await self.session.scalars(select(Role).where(Role.name == name))).first()

    async def _check_name_free(self, name: str, role_id: uuid.UUID | None = None) -> None:
        holder = await self.by_name(name)
        if holder is not None and holder.id != role_id:
            kind = "a built-in role" if holder.builtin else "a role"
            raise Conflict(f"{kind} named {name} already exists", details={"name": name})

    async def create(
        self,
        name: str,
        permissions: list[str],
        description: str = "",
        *,
        by: Principal | None = None,
    ) -> Role:
        name = check_slug(name, "name", ROLE_NAME_MAX_LENGTH)
        permissions = _check_permissions(permissions, by)
        await self._check_name_free(name)
        role = Role(
            name=name, description=description.strip(), permissions=permissions, builtin=False
        )
        self.session.add(role)
        await flush_unique(self.session, f"a role named {name} already exists", {"name": name})
        await self.audit.record("role.create", "role", role.id, after=snapshot(role))
        return role

    def _not_builtin(self, role: Role, change: str) -> None:
        if role.builtin:
            raise Conflict(
                f"built-in role {role.name} cannot be {change}", details={"role": role.name}
            )

    async def update(
        self,
        role: Role,
        *,
        name: str | None = None,
        description: str | None = None,
        permissions: list[str] | None = None,
        by: Principal | None = None,
    ) -> Role:
        self._not_builtin(role, "changed")
        if permissions is not None:
            permissions = _check_permissions(permissions, by)
        if name is not None and name != role.name:
            await self._check_name_free(check_slug(name, "name", ROLE_NAME_MAX_LENGTH), role.id)
        before = snapshot(role)
        if name is not None:
            role.name = name
        if description is not None:
            role.description = description.strip()
        if permissions is not None:
            role.permissions = permissions
        await flush_unique(
            self.session, f"a role named {role.name} already exists", {"name": role.name}
        )
        await self.audit.record("role.update", "role", role.id, before=before, after=snapshot(role))
        return role

    async def grant_count(self, role_id: uuid.UUID) -> int:
        stmt = select(func.count()).select_from(UserRole).where(UserRole.role_id == role_id)
        return int(await self.session.scalar(stmt) or 0)

    async def delete(self, role: Role) -> None:
        self._not_builtin(role, "deleted")
        grants = await self.grant_count(role.id)
        if grants:
            raise Conflict(
                f"role {role.name} is still granted {grants} time{'s' if grants != 1 else ''}; "
                "revoke those grants first",
                details={"grants": grants},
            )
        before = snapshot(role)
        await self.session.delete(role)
        await self.session.flush()
        await self.audit.record("role.delete", "role", role.id, before=before)

    async def list(self, page: PageRequest) -> Page[Role]:
        """Built-in roles first (created with the schema), then custom ones; by name on ties."""
        return await paginate(self.session, select(Role), page, order=(Role.created_at, Role.name))
