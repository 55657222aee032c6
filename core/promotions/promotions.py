"""Promotions on the database side: requesting one (and a roll back), finding and listing them,
the policy gate, the plan a workflow works from, who may approve, and mirroring the workflow's
state into the row.

The workflow is the truth while a promotion is in flight (`promotion-<id>`); the row is what
lists and filters read, written by the workflow's activities."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.catalog.versions import parse_version
from core.db.types import utcnow
from core.environments.policy import ProtectionPolicy
from core.errors import Conflict, NotFound, ValidationFailed
from core.identity.organizations import Visibility
from core.models.catalog import Service, ServiceVersion
from core.models.environments import Environment
from core.models.identity import Team, User
from core.models.promotions import Promotion, ServiceDeployment
from core.notifications.channels import team_channel_ids
from core.pagination import Page, PageRequest, paginate
from core.promotions.messages import PENDING, Gate, Plan, PromotionKind, StatusUpdate
from core.promotions.provenance import provenance_of
from core.security.authorization import Principal

WORKFLOW_ID_PREFIX = "promotion-"


def workflow_id_for(promotion_id: uuid.UUID | str) -> str:
    return f"{WORKFLOW_ID_PREFIX}{promotion_id}"


def policy_of(env: Environment) -> ProtectionPolicy:
    return ProtectionPolicy.model_validate(env.policy or {})


@dataclass(frozen=True)
class PromotionFilter:
    visible: Visibility  # promotions:read
    environment_id: uuid.UUID | None = None
    service_id: uuid.UUID | None = None
    status: str | None = None
    kind: str | None = None
    requested_by: uuid.UUID | None = None


class PromotionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    # -- requests -------------------------------------------------------------------------
    async def version(self, service: Service, version: str) -> ServiceVersion:
        normalised = str(parse_version(version))
        found = await self.session.scalar(
            select(ServiceVersion).where(
                ServiceVersion.service_id == service.id, ServiceVersion.version == normalised
            )
        )
        if found is None:
            raise ValidationFailed.on(
                "version",
                f"{service.name} has no version {normalised} (register it with "
                f"POST /services/{service.id}/versions)",
            )
        return found

    async def request(
        self,
        env: Environment,
        service: Service,
        version: ServiceVersion,
        principal: Principal,
        *,
        kind: PromotionKind = "promote",
        comment: str = "",
    ) -> Promotion:
        """A new promotion (or roll back) of `version` into `env`; 409 while one of the same
        service into the same environment is still pending. Its branch and commit are the
        version's provenance (the pipeline run that built it), never the caller's word."""
        if service.org_id != env.org_id:
            raise ValidationFailed.on(
                "service_id", f"{service.name} is not in the environment's organization"
            )
        open_one = await self.session.scalar(
            select(Promotion).where(
                Promotion.environment_id == env.id,
                Promotion.service_id == service.id,
                Promotion.status.in_([*PENDING, "deploying", "verifying"]),
            )
        )
        if open_one is not None:
            raise Conflict(
                f"a promotion of {service.name} {open_one.version} to {env.name} is in progress "
                f"({open_one.status}); cancel it or wait",
                details={"promotion_id": str(open_one.id)},
            )
        current = await self.current(env.id, service.id)
        origin = await provenance_of(self.session, version)
        promotion_id = uuid.uuid4()
        row = Promotion(
            id=promotion_id,
            org_id=env.org_id,
            environment_id=env.id,
            service_id=service.id,
            version_id=version.id,
            version=version.version,
            kind=kind,
            status="pending",
            requested_by=principal.user_id,
            branch=origin.branch,
            git_sha=origin.git_sha,
            pipeline_run_id=origin.pipeline_run_id,
            provenance=origin.label,
            comment=comment,
            required_approvals=0 if kind == "rollback" else policy_of(env).required_approvals,
            workflow_id=workflow_id_for(promotion_id),
            previous_version=current.version if current else None,
        )
        self.session.add(row)
        await self.session.flush()
        await self.audit.record(f"promotion.{kind}", "promotion", row.id, after=snapshot(row))
        return row

    async def rollback_version(
        self, env: Environment, service: Service, version: str | None
    ) -> ServiceVersion:
        """The version to roll back to: `version` if it ran in `env` before, else the one that
        ran before the current one."""
        current = await self.current(env.id, service.id)
        stmt = (
            select(ServiceVersion)
            .join(ServiceDeployment, ServiceDeployment.version_id == ServiceVersion.id)
            .where(
                ServiceDeployment.environment_id == env.id,
                ServiceDeployment.service_id == service.id,
                ServiceDeployment.status == "superseded",
            )
            .order_by(ServiceDeployment.deployed_at.desc())
        )
        if version is not None:
            stmt = stmt.where(ServiceVersion.version == str(parse_version(version)))
        elif current is not None:
            stmt = stmt.where(ServiceVersion.id != current.version_id)
        found = await self.session.scalar(stmt.limit(1))
        if found is None:
            which = f"version {version}" if version else "a version before the current one"
            raise ValidationFailed.on(
                "version",
                f"{service.name} has not run {which} in {env.name}; nothing to roll back to",
            )
        return found

    # -- reading --------------------------------------------------------------------------
    async def get(self, promotion_id: uuid.UUID) -> Promotion:
        row = await self.session.get(Promotion, promotion_id)
        if row is None:
            raise NotFound(f"promotion {promotion_id} not found")
        return row

    def _query(self, f: PromotionFilter) -> Select[Any]:
        stmt = select(Promotion)
        if not f.visible.everything:
            stmt = stmt.where(
                or_(
                    Promotion.org_id.in_(f.visible.organization_ids),
                    Promotion.environment_id.in_(f.visible.environment_ids),
                )
            )
        for column, value in (
            (Promotion.environment_id, f.environment_id),
            (Promotion.service_id, f.service_id),
            (Promotion.status, f.status),
            (Promotion.kind, f.kind),
            (Promotion.requested_by, f.requested_by),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        return stmt

    async def search(self, f: PromotionFilter, page: PageRequest) -> Page[Promotion]:
        """Newest first."""
        return await paginate(
            self.session,
            self._query(f),
            page,
            order=(Promotion.created_at, Promotion.id),
            descending=True,
        )

    async def current(self, env_id: uuid.UUID, service_id: uuid.UUID) -> ServiceDeployment | None:
        """What runs now: the service's healthy deployment in the environment."""
        found = await self.session.scalar(
            select(ServiceDeployment)
            .where(
                ServiceDeployment.environment_id == env_id,
                ServiceDeployment.service_id == service_id,
                ServiceDeployment.status == "healthy",
            )
            .order_by(ServiceDeployment.deployed_at.desc())
            .limit(1)
        )
        return found

    async def running(self, env_id: uuid.UUID) -> list[ServiceDeployment]:
        """Every service's healthy deployment in the environment."""
        return list(
            await self.session.scalars(
                select(ServiceDeployment)
                .where(
                    ServiceDeployment.environment_id == env_id,
                    ServiceDeployment.status == "healthy",
                )
                .order_by(ServiceDeployment.deployed_at, ServiceDeployment.id)
            )
        )

    # -- the workflow's side --------------------------------------------------------------
    async def gate(self, promotion: Promotion, now: datetime) -> Gate:
        """The policy checks, now: the branch is allowed, the version is healthy in the
        previous environment and has soaked there long enough, and no freeze is on."""
        env = await self.session.get(Environment, promotion.environment_id)
        assert env is not None
        policy = policy_of(env)
        if not policy.branch_allowed(promotion.branch):
            allowed = ", ".join(policy.allowed_branches)
            if promotion.branch is None:
                return Gate(
                    refused=f"{promotion.version} has {promotion.provenance}, so its branch is "
                    f"unknown and it may not go to {env.name} (allowed: {allowed}); register "
                    "the version with the pipeline_run_id of the run that built it"
                )
            return Gate(
                refused=f"branch {promotion.provenance} may not go to {env.name} "
                f"(allowed: {allowed})"
            )
        if env.previous_id is not None:
            previous = await self.session.get(Environment, env.previous_id)
            assert previous is not None
            there = await self.current(previous.id, promotion.service_id)
            if there is None or there.version_id != promotion.version_id:
                running = f"it runs {there.version}" if there else "nothing runs there"
                return Gate(
                    refused=f"{promotion.version} is not deployed and healthy in "
                    f"{previous.name} ({running}); promote it there first"
                )
            assert there.deployed_at is not None
            soaked_at = there.deployed_at + policy.soak_time
            if soaked_at > now:
                return Gate(
                    wait_until=soaked_at,
                    wait_reason=f"soak time: healthy in {previous.name} since "
                    f"{there.deployed_at.isoformat()}, {policy.soak_time} needed",
                )
        freeze = policy.freeze_at(now)
        if freeze is not None:
            why = f" ({freeze.reason})" if freeze.reason else ""
            return Gate(
                wait_until=freeze.ends_at,
                wait_reason=f"freeze window until {freeze.ends_at.isoformat()}{why}",
            )
        return Gate()

    async def plan(self, promotion: Promotion, platform_url: str) -> Plan:
        env = await self.session.get(Environment, promotion.environment_id)
        service = await self.session.get(Service, promotion.service_id)
        assert env is not None and service is not None
        policy = policy_of(env)
        requester = (
            await self.session.get(User, promotion.requested_by) if promotion.requested_by else None
        )
        channels = await approval_channels(
            self.session, env.org_id, service.owner_team_id, policy.approver_teams
        )
        rollback = promotion.kind == "rollback"
        return Plan(
            promotion_id=promotion.id,
            kind=promotion.kind,
            org_id=env.org_id,
            environment_id=env.id,
            environment=env.name,
            service_id=service.id,
            service=service.name,
            version_id=promotion.version_id,
            version=promotion.version,
            previous_version=promotion.previous_version,
            requested_by=promotion.requested_by,
            requested_by_name=(requester.name or requester.email) if requester else None,
            comment=promotion.comment,
            provenance=promotion.provenance,
            required_approvals=0 if rollback else policy.required_approvals,
            approver_teams=policy.approver_teams,
            approver_roles=policy.approver_roles,
            allow_self_approval=policy.allow_self_approval,
            approval_timeout=policy.approval_timeout.total_seconds(),
            reminder_interval=(
                policy.reminder_interval.total_seconds() if policy.reminder_interval else None
            ),
            verification_window=policy.verification_window.total_seconds(),
            freeze_windows=bool(policy.freeze_windows),
            channel_ids=channels,
            team_id=service.owner_team_id,
            promotion_url=f"{platform_url}/promotions/{promotion.id}",
        )

    async def record(self, update: StatusUpdate) -> Promotion:
        row = await self.get(update.promotion_id)
        row.status = update.status
        if update.reason is not None:
            row.reason = update.reason
        if update.decisions is not None:
            row.decisions = [d.model_dump(mode="json") for d in update.decisions]
        if update.expires_at is not None:
            row.expires_at = update.expires_at
        if update.finished and row.finished_at is None:
            row.finished_at = utcnow()
        await self.session.flush()
        return row


async def approval_channels(
    session: AsyncSession, org_id: uuid.UUID, team_id: uuid.UUID | None, approver_teams: list[str]
) -> list[uuid.UUID]:
    """The channels of the requesting team and of every approver team (by slug)."""
    channels = await team_channel_ids(session, team_id) if team_id else []
    for slug in approver_teams:
        found = await session.scalar(
            select(Team.id).where(
                Team.org_id == org_id, Team.slug == slug, Team.deleted_at.is_(None)
            )
        )
        if found is not None:
            channels += [c for c in await team_channel_ids(session, found) if c not in channels]
    return channels
