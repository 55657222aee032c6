"""Provisioning runs: requesting one (validated before anything starts), the plan its
workflow reads, mirroring its state, recording what `up` created (resources, their parent
and dependency relationships, the stack's outputs) and what `destroy` removed, and its log.

A run targets one environment's stack (`<project>/<stack>`, the stack named after the
environment's id so renames never orphan it). One run per environment at a time: the
workflow ids are `provision-<environment id>` and `destroy-<environment id>`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.db.types import utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.identity.organizations import Visibility
from core.infrastructure.budgets import budget_status
from core.infrastructure.costs import PriceCatalog
from core.infrastructure.engine import Deployed
from core.infrastructure.preview import tags_in
from core.infrastructure.provision_messages import TERMINAL, ProvisionPlan, ProvisionStatus
from core.models.environments import Environment
from core.models.identity import Team, User
from core.models.infrastructure import Budget, Provider, Resource, ResourceRelationship
from core.models.provisioning import Provision, ProvisionLogChunk
from core.pagination import Page, PageRequest, paginate
from core.promotions.promotions import approval_channels, policy_of
from core.security.authorization import Principal
from infra.stacks import StackSpec
from infra.tagging import Tags

PROJECT = "idp-environments"
DEFAULT_PREVIEW_TTL = timedelta(days=3)


def workflow_id(action: str, environment_id: uuid.UUID) -> str:
    return f"{'provision' if action == 'up' else 'destroy'}-{environment_id}"


def stack_name(environment_id: uuid.UUID) -> str:
    return f"env-{environment_id.hex}"


@dataclass(frozen=True)
class ProvisionRequest:
    environment_id: uuid.UUID
    provider_id: uuid.UUID
    team_id: uuid.UUID
    cost_centre: str
    service: str | None = None  # the `service` tag; the environment's name when absent
    tier: str = "small"
    region: str | None = None
    ttl: timedelta | None = None  # preview environments only


@dataclass(frozen=True)
class ProvisionFilter:
    visible: Visibility  # infrastructure:read
    org_id: uuid.UUID | None = None
    environment_id: uuid.UUID | None = None
    status: str | None = None


class ProvisioningService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, provision_id: uuid.UUID) -> Provision:
        row = await self.session.get(Provision, provision_id)
        if row is None:
            raise NotFound(f"provisioning run {provision_id} not found")
        return row

    async def _in_flight(self, env: Environment) -> None:
        open_one = await self.session.scalar(
            select(Provision).where(
                Provision.environment_id == env.id, Provision.status.not_in(TERMINAL)
            )
        )
        if open_one is not None:
            raise Conflict(
                f"a {'provisioning' if open_one.action == 'up' else 'destroy'} of {env.name} is "
                f"in progress ({open_one.status}); wait for it or cancel it",
                details={"provision_id": str(open_one.id)},
            )

    async def request(
        self, env: Environment, provider: Provider, req: ProvisionRequest, principal: Principal
    ) -> Provision:
        """A new run of `up` for `env`'s stack on `provider`; 422 for a bad spec, 409 while
        another run of the environment is in flight."""
        if provider.org_id != env.org_id:
            raise ValidationFailed.on(
                "provider_id", f"{provider.name} is not in the environment's organization"
            )
        team = await self.session.get(Team, req.team_id)
        if team is None or team.org_id != env.org_id or team.deleted_at is not None:
            raise ValidationFailed.on("team_id", "no such team in the environment's organization")
        region = req.region or (provider.regions[0] if provider.regions else None)
        if region and provider.regions and region not in provider.regions:
            raise ValidationFailed.on(
                "region",
                f"{region} is not one of {provider.name}'s regions ({', '.join(provider.regions)})",
            )
        if req.ttl is not None and env.type != "preview":
            raise ValidationFailed.on("ttl", "only preview environments have a time to live")
        try:
            spec = StackSpec(
                cloud=provider.type,
                region=None if provider.type == "kubernetes" else region,
                tier=req.tier,
                tags=Tags(
                    team=team.slug,
                    service=req.service or env.name,
                    environment=env.name,
                    cost_centre=req.cost_centre,
                ),
            )
        except ValidationError as exc:
            problems = [{"field": "spec", "message": str(e["msg"])} for e in exc.errors()]
            raise ValidationFailed(
                "the stack cannot be built from this request: "
                + "; ".join(p["message"] for p in problems),
                details=problems,
            ) from None
        await self._in_flight(env)
        ttl = req.ttl or (DEFAULT_PREVIEW_TTL if env.type == "preview" else None)
        row = Provision(
            org_id=env.org_id,
            environment_id=env.id,
            provider_id=provider.id,
            action="up",
            status="pending",
            stack=f"{PROJECT}/{stack_name(env.id)}",
            spec={
                **spec.model_dump(mode="json"),
                "ttl_seconds": ttl.total_seconds() if ttl else None,
            },
            requested_by=principal.user_id,
            workflow_id=workflow_id("up", env.id),
        )
        self.session.add(row)
        await self.session.flush()
        await self.audit.record(
            "infrastructure.provision", "provision", row.id, after=snapshot(row)
        )
        return row

    async def request_destroy(
        self,
        env: Environment,
        provider: Provider,
        principal: Principal | None,
        *,
        resource: Resource | None = None,
        reason: str | None = None,
    ) -> Provision:
        """A new run of `destroy` of the environment's stack, or of one resource of it (and
        what depends on it); 409 while another run of the environment is in flight."""
        await self._in_flight(env)
        last_up = await self.session.scalar(
            select(Provision)
            .where(Provision.environment_id == env.id, Provision.action == "up")
            .order_by(Provision.created_at.desc())
            .limit(1)
        )
        row = Provision(
            org_id=env.org_id,
            environment_id=env.id,
            provider_id=provider.id,
            action="destroy",
            status="pending",
            stack=f"{PROJECT}/{stack_name(env.id)}",
            spec=last_up.spec if last_up else {},
            resource_id=resource.id if resource else None,
            requested_by=principal.user_id if principal else None,
            reason=reason,
            workflow_id=workflow_id("destroy", env.id),
        )
        self.session.add(row)
        await self.session.flush()
        await self.audit.record("infrastructure.destroy", "provision", row.id, after=snapshot(row))
        return row

    # -- reading ----------------------------------------------------------------------------
    def _query(self, f: ProvisionFilter) -> Select[Any]:
        stmt = select(Provision)
        if not f.visible.everything:
            stmt = stmt.where(Provision.org_id.in_(f.visible.organization_ids))
        for column, value in (
            (Provision.org_id, f.org_id),
            (Provision.environment_id, f.environment_id),
            (Provision.status, f.status),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        return stmt

    async def search(self, f: ProvisionFilter, page: PageRequest) -> Page[Provision]:
        return await paginate(
            self.session,
            self._query(f),
            page,
            order=[Provision.created_at, Provision.id],
            descending=True,
        )

    async def log_chunks(
        self, provision_id: uuid.UUID, after: int = 0, limit: int = 500
    ) -> list[ProvisionLogChunk]:
        rows = await self.session.scalars(
            select(ProvisionLogChunk)
            .where(ProvisionLogChunk.provision_id == provision_id, ProvisionLogChunk.id > after)
            .order_by(ProvisionLogChunk.id)
            .limit(limit)
        )
        return list(rows)

    # -- for the workflow's activities ------------------------------------------------------
    async def plan(self, provision_id: uuid.UUID, platform_url: str) -> ProvisionPlan:
        row = await self.get(provision_id)
        env = await self.session.get(Environment, row.environment_id)
        provider = await self.session.get(Provider, row.provider_id)
        assert env is not None and provider is not None
        policy = policy_of(env)
        team_id = await self._team_of(row)
        requester = await self.session.get(User, row.requested_by) if row.requested_by else None
        return ProvisionPlan(
            provision_id=row.id,
            action=row.action,
            org_id=row.org_id,
            environment_id=env.id,
            environment=env.name,
            environment_type=env.type,
            provider=provider.name,
            cloud=provider.type,
            stack=row.stack,
            note=row.reason,
            whole_stack=row.resource_id is None,
            requested_by=row.requested_by,
            requested_by_name=(requester.name or requester.email) if requester else None,
            required_approvals=max(1, policy.required_approvals),
            approver_teams=policy.approver_teams,
            approver_roles=policy.approver_roles,
            allow_self_approval=policy.allow_self_approval,
            approval_timeout=policy.approval_timeout.total_seconds(),
            reminder_interval=(
                policy.reminder_interval.total_seconds() if policy.reminder_interval else None
            ),
            ttl=row.spec.get("ttl_seconds") if row.action == "up" else None,
            channel_ids=await approval_channels(
                self.session, env.org_id, team_id, policy.approver_teams
            ),
            team_id=team_id,
            provision_url=f"{platform_url}/infrastructure/provisions/{row.id}",
            environment_url=f"{platform_url}/environments/{env.id}",
        )

    async def _team_of(self, row: Provision) -> uuid.UUID | None:
        slug = (row.spec.get("tags") or {}).get("team")
        if not slug:
            return None
        found: uuid.UUID | None = await self.session.scalar(
            select(Team.id).where(
                Team.org_id == row.org_id, Team.slug == slug, Team.deleted_at.is_(None)
            )
        )
        return found

    async def over_budget(self, row: Provision, estimate: Decimal) -> str | None:
        """Why `estimate` (a month) needs approval: it is more than what is left of a budget
        of the environment or of the stack's team this month."""
        team_id = await self._team_of(row)
        budgets = await self.session.scalars(
            select(Budget).where(
                Budget.org_id == row.org_id,
                Budget.deleted_at.is_(None),
                (Budget.environment_id == row.environment_id)
                | ((Budget.team_id == team_id) & Budget.environment_id.is_(None)),
            )
        )
        for budget in budgets:
            status = await budget_status(self.session, budget, utcnow().date())
            left = budget.amount - status.spent
            if estimate > left:
                return (
                    f"the estimate {estimate:.2f} {budget.currency} a month is over what is "
                    f"left of the budget of {status.scope} ({left:.2f} of {budget.amount:.2f})"
                )
        return None

    async def record(self, update: ProvisionStatus) -> Provision:
        row = await self.get(update.provision_id)
        row.status = update.status
        for name in ("reason", "approval_reason", "expires_at", "destroy_at"):
            value = getattr(update, name)
            if value is not None:
                setattr(row, name, value)
        if update.decisions is not None:
            row.decisions = [d.model_dump(mode="json") for d in update.decisions]
        if update.finished and row.finished_at is None:
            row.finished_at = utcnow()
        await self.session.flush()
        return row

    async def record_up(self, row: Provision, deployed: Deployed, catalog: PriceCatalog) -> int:
        """Upsert every resource the stack holds (keyed by provider and URN) with its monthly
        cost from the price catalog, mark those it no longer holds destroyed, and record
        parent and dependency relationships."""
        provider = await self.session.get(Provider, row.provider_id)
        assert provider is not None
        region = row.spec.get("region")
        existing = {
            r.identifier: r
            for r in await self.session.scalars(
                select(Resource).where(
                    Resource.provider_id == row.provider_id, Resource.stack == row.stack
                )
            )
        }
        by_urn: dict[str, Resource] = {}
        for item in deployed.resources:
            inputs = dict(item.inputs)
            resource = existing.get(item.urn) or Resource(
                provider_id=row.provider_id, identifier=item.urn
            )
            resource.environment_id = row.environment_id
            resource.type = item.type
            resource.name = item.name
            resource.region = region
            resource.tags = tags_in(inputs) or {}
            resource.status = "active"
            resource.stack = row.stack
            resource.properties = {**inputs, "cloud_id": item.id}
            resource.cost_monthly, _ = catalog.monthly(resource)
            if resource not in self.session:
                self.session.add(resource)
            by_urn[item.urn] = resource
        for urn, resource in existing.items():
            if urn not in by_urn and resource.status != "destroyed":
                resource.status = "destroyed"
        await self.session.flush()
        await self._relate(deployed, by_urn)
        row.outputs = dict(deployed.outputs)
        await self.session.flush()
        return len(by_urn)

    async def _relate(self, deployed: Deployed, by_urn: dict[str, Resource]) -> None:
        ids = [r.id for r in by_urn.values()]
        current = {
            (r.parent_id, r.child_id, r.relationship_type)
            for r in await self.session.scalars(
                select(ResourceRelationship).where(ResourceRelationship.child_id.in_(ids))
            )
        }
        wanted: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
        for item in deployed.resources:
            child = by_urn[item.urn]
            if item.parent in by_urn:
                wanted.add((by_urn[item.parent].id, child.id, "parent"))
            for dependency in item.dependencies:
                if dependency in by_urn:
                    wanted.add((by_urn[dependency].id, child.id, "depends_on"))
        for parent_id, child_id, kind in wanted - current:
            self.session.add(
                ResourceRelationship(parent_id=parent_id, child_id=child_id, relationship_type=kind)
            )
        await self.session.flush()

    async def stack_resources(self, row: Provision) -> list[Resource]:
        """The active resources of the run's stack: all of them, or the targeted resource
        and every one that depends on it or is its child."""
        rows = list(
            await self.session.scalars(
                select(Resource).where(
                    Resource.provider_id == row.provider_id,
                    Resource.stack == row.stack,
                    Resource.status != "destroyed",
                )
            )
        )
        if row.resource_id is None:
            return rows
        chosen = {row.resource_id}
        links = list(
            await self.session.scalars(
                select(ResourceRelationship).where(
                    ResourceRelationship.child_id.in_([r.id for r in rows])
                )
            )
        )
        grew = True
        while grew:
            more = {link.child_id for link in links if link.parent_id in chosen} - chosen
            chosen |= more
            grew = bool(more)
        return [r for r in rows if r.id in chosen]

    async def mark(self, resources: list[Resource], status: str) -> None:
        for resource in resources:
            resource.status = status
        await self.session.flush()
