"""The one authorization decision: may this principal do this to this resource?

A principal holds grants: a role's permissions at a scope (global, or one organization, team
or environment), from `user_roles` or from team membership. An API key is further limited to
the permissions written on it, and never exceeds what its owner holds now.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from core.errors import Forbidden

Scope = Literal["global", "organization", "team", "environment"]
SCOPES: tuple[Scope, ...] = ("global", "organization", "team", "environment")


@dataclass(frozen=True)
class Grant:
    role: str
    permissions: frozenset[str]
    scope: Scope = "global"
    scope_id: uuid.UUID | None = None
    source: Literal["role", "membership", "access"] = "role"
    grant_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Resource:
    """Where a resource sits; a grant at any of these scopes covers it."""

    organization_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    environment_id: uuid.UUID | None = None

    def covered_by(self, grant: Grant) -> bool:
        if grant.scope == "global":
            return True
        owner = {
            "organization": self.organization_id,
            "team": self.team_id,
            "environment": self.environment_id,
        }[grant.scope]
        return owner is not None and owner == grant.scope_id


GLOBAL = Resource()  # platform-wide actions: only global grants cover them


class _AnyScope:
    """For "may do this somewhere" checks (list endpoints filter what is shown)."""


ANY_SCOPE = _AnyScope()


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    label: str  # the user's email, or "<key name> (API key)"
    kind: Literal["user", "api_key"] = "user"
    grants: tuple[Grant, ...] = ()
    key_id: uuid.UUID | None = None
    key_permissions: frozenset[str] | None = field(default=None)

    def can(self, permission: str, resource: Resource | _AnyScope = GLOBAL) -> bool:
        if self.key_permissions is not None and permission not in self.key_permissions:
            return False
        return any(
            permission in g.permissions
            and (isinstance(resource, _AnyScope) or resource.covered_by(g))
            for g in self.grants
        )

    def held_permissions(self) -> set[str]:
        """Every permission held at some scope (what an API key may be given)."""
        held = set().union(*(g.permissions for g in self.grants)) if self.grants else set()
        return held if self.key_permissions is None else held & self.key_permissions


def authorize(
    principal: Principal, permission: str, resource: Resource | _AnyScope = GLOBAL
) -> None:
    """Raise a 403 naming the missing permission unless `principal` holds it for `resource`."""
    if principal.can(permission, resource):
        return
    where = (
        "here"
        if isinstance(resource, _AnyScope)
        else ("platform-wide" if resource == GLOBAL else "on this resource")
    )
    raise Forbidden(
        f"missing permission {permission} ({where})",
        details={"permission": permission},
    )
