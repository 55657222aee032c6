"""Environments of an organization: create, read, list, and their configuration entries.

An environment's name is a slug unique among the organization's live environments. Its place
in the promotion order is the environment before it (`previous_id`, same organization, no
loop). Secret configuration values are encrypted with the key ring (AES-256-GCM, bound to the
environment and key) and shown masked; the audit log records which keys changed, never a
secret's value."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.db.types import utcnow
from core.environments.kubernetes import placement
from core.environments.policy import (
    EnvironmentType,
    ProtectionPolicy,
    ResourceLimits,
    Target,
)
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.identity.organizations import Visibility, check_slug, flush_unique
from core.models.environments import Environment, EnvironmentAccess, EnvironmentConfig
from core.models.identity import Organization, Team, User
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import Principal, Resource, authorize
from core.security.encryption import installed_keyring
from core.validation import validate_model

MASK = "********"
ENVIRONMENT_TYPES: tuple[str, ...] = ("development", "staging", "production", "preview")
TARGETS: tuple[str, ...] = ("local", "kubernetes")
_CONFIG_KEY_MAX = 255


def environment_resource(env: Environment) -> Resource:
    """Where an environment sits: its organization, and itself (environment-scoped roles)."""
    return Resource(organization_id=env.org_id, environment_id=env.id)


async def authorized_environment(
    session: AsyncSession, env_id: uuid.UUID, principal: Principal, permission: str
) -> Environment:
    """The live environment, once `principal` holds `permission` on it (404, then 403)."""
    env = await EnvironmentService(session).get(env_id)
    authorize(principal, permission, environment_resource(env))
    return env


def _aad(env_id: uuid.UUID, key: str) -> bytes:
    """Binds a ciphertext to its environment and key: it cannot be moved to another."""
    return f"environment-config:{env_id}:{key}".encode()


def reveal(entry: EnvironmentConfig) -> str:
    """The plain value (decrypted for a secret): only for injecting into a deployment."""
    if not entry.is_secret:
        return entry.value
    return installed_keyring().decrypt_str(entry.value, aad=_aad(entry.env_id, entry.key))


@dataclass
class EnvironmentFields:
    name: str
    type: EnvironmentType
    description: str = ""
    target: Target = "local"
    cluster_id: str | None = None
    namespace: str | None = None
    previous_id: uuid.UUID | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConfigEntry:
    key: str
    value: str
    is_secret: bool = False


@dataclass(frozen=True)
class EnvironmentFilter:
    visible: Visibility  # grants on organizations and on single environments
    org_id: uuid.UUID | None = None
    type: str | None = None
    q: str | None = None


def _check_key(key: str, index: int) -> str:
    key = key.strip()
    if not key or len(key) > _CONFIG_KEY_MAX or any(c.isspace() or c == "=" for c in key):
        raise ValidationFailed.on(
            f"entries[{index}].key",
            f"{key!r} is not a configuration key (1-255 characters, no spaces or '=')",
        )
    return key


class EnvironmentService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, env_id: uuid.UUID) -> Environment:
        env = await self.session.get(Environment, env_id)
        if env is None or env.is_deleted:
            raise NotFound(f"environment {env_id} not found")
        return env

    async def _check_previous(self, org_id: uuid.UUID, previous_id: uuid.UUID) -> Environment:
        previous = await self.session.get(Environment, previous_id)
        if previous is None or previous.is_deleted or previous.org_id != org_id:
            raise ValidationFailed.on(
                "previous_id", f"no environment {previous_id} in this organization"
            )
        return previous

    async def create(
        self, org: Organization, fields: EnvironmentFields, principal: Principal
    ) -> Environment:
        """A Kubernetes environment gets its derived namespace (another one only from a
        platform admin) and a context on the organization's allow-list (core.environments.
        kubernetes)."""
        name = check_slug(fields.name, "name", 63)
        if fields.type not in ENVIRONMENT_TYPES:
            raise ValidationFailed.on("type", f"type must be one of {', '.join(ENVIRONMENT_TYPES)}")
        if fields.target not in TARGETS:
            raise ValidationFailed.on("target", f"target must be one of {', '.join(TARGETS)}")
        limits = validate_model(ResourceLimits, fields.limits, "limits")
        policy = validate_model(ProtectionPolicy, fields.policy, "policy")
        namespace = cluster_id = None
        if fields.target == "kubernetes":
            cluster_id = fields.cluster_id
            namespace = await placement(
                self.session,
                org,
                name,
                namespace=fields.namespace,
                cluster_id=cluster_id,
                principal=principal,
            )
        elif fields.namespace is not None or fields.cluster_id is not None:
            field = "namespace" if fields.namespace is not None else "cluster_id"
            raise ValidationFailed.on(field, "only a kubernetes environment has one")
        env = Environment(
            org_id=org.id,
            name=name,
            description=fields.description,
            type=fields.type,
            target=fields.target,
            cluster_id=cluster_id,
            namespace=namespace,
            limits=limits.model_dump(mode="json", exclude_none=True),
            policy=policy.model_dump(mode="json"),
            config=fields.config,
        )
        if fields.previous_id is not None:
            previous = await self._check_previous(org.id, fields.previous_id)
            env.previous_id, env.position = previous.id, previous.position + 1
        taken = await self.session.scalar(
            select(Environment.id).where(
                Environment.org_id == org.id,
                Environment.name == name,
                Environment.deleted_at.is_(None),
            )
        )
        if taken is not None:
            raise Conflict(f"the organization already has an environment named {name}")
        self.session.add(env)
        await flush_unique(
            self.session, f"the organization already has an environment named {name}"
        )
        await self.audit.record("environment.create", "environment", env.id, after=snapshot(env))
        return env

    def _query(self, f: EnvironmentFilter) -> Select[Any]:
        stmt = select(Environment).where(Environment.deleted_at.is_(None))
        if not f.visible.everything:
            stmt = stmt.where(
                or_(
                    Environment.org_id.in_(f.visible.organization_ids),
                    Environment.id.in_(f.visible.environment_ids),
                )
            )
        if f.org_id is not None:
            stmt = stmt.where(Environment.org_id == f.org_id)
        if f.type is not None:
            stmt = stmt.where(Environment.type == f.type)
        if f.q:
            stmt = stmt.where(Environment.name.contains(f.q.lower(), autoescape=True))
        return stmt

    async def search(self, f: EnvironmentFilter, page: PageRequest) -> Page[Environment]:
        """In promotion order (position), then by name."""
        return await paginate(
            self.session,
            self._query(f),
            page,
            order=(Environment.position, Environment.name, Environment.id),
        )

    async def config(self, env: Environment) -> list[EnvironmentConfig]:
        return list(
            await self.session.scalars(
                select(EnvironmentConfig)
                .where(EnvironmentConfig.env_id == env.id)
                .order_by(EnvironmentConfig.key)
            )
        )

    async def set_config(
        self, env: Environment, entries: list[ConfigEntry], remove: list[str]
    ) -> list[EnvironmentConfig]:
        """Set `entries` (added or replaced) and delete the `remove` keys, in one change;
        audited as which keys were set, replaced and removed (secret values never)."""
        keys = [_check_key(e.key, i) for i, e in enumerate(entries)]
        twice = sorted({k for k in keys if keys.count(k) > 1} | (set(keys) & set(remove)))
        if twice:
            raise ValidationFailed.on("entries", f"keys given twice: {', '.join(twice)}")
        current = {c.key: c for c in await self.config(env)}
        missing = sorted(set(remove) - set(current))
        if missing:
            raise NotFound(f"no configuration keys {', '.join(missing)} in {env.name}")
        before = {k: _shown(c) for k, c in current.items()}
        keyring = installed_keyring()
        for key, entry in zip(keys, entries, strict=True):
            row = current.get(key) or EnvironmentConfig(env_id=env.id, key=key)
            row.is_secret = entry.is_secret
            row.value = (
                keyring.encrypt_str(entry.value, aad=_aad(env.id, key))
                if entry.is_secret
                else entry.value
            )
            self.session.add(row)
        for key in remove:
            await self.session.delete(current[key])
        await self.session.flush()
        after = {c.key: _shown(c) for c in await self.config(env)}
        await self.audit.record(
            "environment.config.update",
            "environment",
            env.id,
            before=before,
            after={**after, "_changed": sorted({*keys, *remove})},
        )
        return await self.config(env)


def _shown(entry: EnvironmentConfig) -> str:
    """What a response or the audit log may show of a value."""
    return MASK if entry.is_secret else entry.value


# Permissions that can be granted on one environment (`environment_access`).
ENVIRONMENT_PERMISSIONS: tuple[str, ...] = (
    "environments:read",
    "environments:write",
    "environments:deploy",
    "promotions:read",
    "promotions:approve",
    "infrastructure:approve",
)


class EnvironmentAccessService:
    """Per-user or per-team grants on one environment. A caller grants only permissions it
    holds on that environment itself, so access can be shared but never raised."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def grants(self, env: Environment) -> list[EnvironmentAccess]:
        return list(
            await self.session.scalars(
                select(EnvironmentAccess)
                .where(EnvironmentAccess.env_id == env.id)
                .order_by(EnvironmentAccess.granted_at, EnvironmentAccess.id)
            )
        )

    async def grant(
        self,
        env: Environment,
        principal: Principal,
        permissions: list[str],
        *,
        user_id: uuid.UUID | None = None,
        team_id: uuid.UUID | None = None,
    ) -> EnvironmentAccess:
        if (user_id is None) == (team_id is None):
            raise ValidationFailed.on("user_id", "give exactly one of user_id and team_id")
        unknown = sorted(set(permissions) - set(ENVIRONMENT_PERMISSIONS))
        if unknown or not permissions:
            raise ValidationFailed.on(
                "permissions",
                f"permissions must be some of {', '.join(ENVIRONMENT_PERMISSIONS)}"
                + (f" (not {', '.join(unknown)})" if unknown else ""),
            )
        beyond = sorted(p for p in permissions if not principal.can(p, environment_resource(env)))
        if beyond:
            raise Forbidden(
                f"you cannot grant what you do not hold here: {', '.join(beyond)}",
                details={"permissions": beyond},
            )
        await self._check_grantee(env, user_id, team_id)
        row = await self.session.scalar(
            select(EnvironmentAccess).where(
                EnvironmentAccess.env_id == env.id,
                EnvironmentAccess.user_id.is_(None)
                if user_id is None
                else EnvironmentAccess.user_id == user_id,
                EnvironmentAccess.team_id.is_(None)
                if team_id is None
                else EnvironmentAccess.team_id == team_id,
            )
        )
        before = snapshot(row) if row is not None else None
        row = row or EnvironmentAccess(env_id=env.id, user_id=user_id, team_id=team_id)
        row.permissions = sorted(set(permissions))
        row.granted_by = principal.user_id
        row.granted_at = utcnow()
        self.session.add(row)
        await self.session.flush()
        await self.audit.record(
            "environment.access.grant", "environment", env.id, before=before, after=snapshot(row)
        )
        return row

    async def _check_grantee(
        self, env: Environment, user_id: uuid.UUID | None, team_id: uuid.UUID | None
    ) -> None:
        if user_id is not None:
            user = await self.session.get(User, user_id)
            if user is None or user.is_deleted:
                raise ValidationFailed.on("user_id", f"no user {user_id}")
        if team_id is not None:
            team = await self.session.get(Team, team_id)
            if team is None or team.is_deleted or team.org_id != env.org_id:
                raise ValidationFailed.on(
                    "team_id", f"no team {team_id} in the environment's organization"
                )

    async def revoke(self, env: Environment, access_id: uuid.UUID) -> None:
        row = await self.session.get(EnvironmentAccess, access_id)
        if row is None or row.env_id != env.id:
            raise NotFound(f"no access grant {access_id} on {env.name}")
        before = snapshot(row)
        await self.session.delete(row)
        await self.session.flush()
        await self.audit.record("environment.access.revoke", "environment", env.id, before=before)
