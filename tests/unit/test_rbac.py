"""The authorization decision: built-in roles against every permission, scopes, API keys."""

from __future__ import annotations

import uuid

import pytest

from core.errors import Forbidden
from core.identity.auth import lock_duration
from core.security.authorization import (
    ANY_SCOPE,
    GLOBAL,
    Grant,
    Principal,
    Resource,
    authorize,
)
from core.security.permissions import BUILTIN_ROLES, PERMISSIONS

# The matrix in docs/security.md, written out so a change to a role is a visible change here.
EXPECTED = {
    "admin": set(PERMISSIONS),
    "maintainer": {p for p in PERMISSIONS if p.endswith(":read") and p != "audit:read"}
    | {
        "services:write",
        "pipelines:write",
        "pipelines:run",
        "pipelines:secrets",
        "environments:write",
        "environments:deploy",
        "infrastructure:provision",
        "notifications:write",
        "teams:write",
        "git_connections:write",
    },
    "developer": {p for p in PERMISSIONS if p.endswith(":read") and p != "audit:read"}
    | {
        "services:write",
        "pipelines:write",
        "pipelines:run",
        "environments:deploy",
    },
    "viewer": {p for p in PERMISSIONS if p.endswith(":read") and p != "audit:read"},
    "approver": {p for p in PERMISSIONS if p.endswith(":read") and p != "audit:read"}
    | {"promotions:approve", "infrastructure:approve"},
}


def principal(*grants: Grant, key: set[str] | None = None) -> Principal:
    return Principal(
        user_id=uuid.uuid4(),
        label="t",
        grants=grants,
        key_permissions=frozenset(key) if key is not None else None,
    )


def grant(role: str, scope: str = "global", scope_id: uuid.UUID | None = None) -> Grant:
    return Grant(role, frozenset(BUILTIN_ROLES[role][1]), scope, scope_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", sorted(BUILTIN_ROLES))
@pytest.mark.parametrize("permission", sorted(PERMISSIONS))
def test_builtin_role_against_each_permission(role: str, permission: str) -> None:
    who = principal(grant(role))
    allowed = permission in EXPECTED[role]
    assert who.can(permission) is allowed
    if allowed:
        authorize(who, permission)
    else:
        with pytest.raises(Forbidden) as info:
            authorize(who, permission)
        assert info.value.details == {"permission": permission}
        assert permission in info.value.message


def test_scoped_grants_cover_only_their_resources() -> None:
    org, team, other_team, env = (uuid.uuid4() for _ in range(4))
    team_dev = principal(grant("developer", "team", team))
    mine = Resource(organization_id=org, team_id=team)
    theirs = Resource(organization_id=org, team_id=other_team)
    assert team_dev.can("services:write", mine)
    assert not team_dev.can("services:write", theirs)
    assert not team_dev.can("services:write", GLOBAL)
    assert team_dev.can("services:write", ANY_SCOPE)
    org_admin = principal(grant("admin", "organization", org))
    assert org_admin.can("teams:write", theirs) and not org_admin.can("teams:write", GLOBAL)
    env_approver = principal(grant("approver", "environment", env))
    assert env_approver.can("promotions:approve", Resource(environment_id=env))
    assert not env_approver.can("promotions:approve", Resource(environment_id=uuid.uuid4()))


def test_api_key_is_limited_to_its_permissions_and_its_owner() -> None:
    key = principal(grant("developer"), key={"services:read", "users:admin"})
    assert key.can("services:read")
    assert not key.can("services:write")  # owner has it, key does not
    assert not key.can("users:admin")  # key lists it, owner lacks it
    assert key.held_permissions() == {"services:read"}


def test_lockout_delay_grows_and_is_capped() -> None:
    assert [lock_duration(n).total_seconds() for n in range(1, 9)] == [
        0,
        0,
        0,
        0,
        30,
        60,
        120,
        240,
    ]
    assert lock_duration(50).total_seconds() == 3600
