"""Infrastructure: cloud providers (`infrastructure:provision` on the organization to add one;
credentials are never returned), the resource inventory and its relationships, and the
compliance of what is in it (`infrastructure:read`)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.identity.organizations import OrganizationService, Visibility
from core.infrastructure.budgets import BudgetService
from core.infrastructure.collectors import check_provider_urls
from core.infrastructure.compliance import RULES, evaluate
from core.infrastructure.cost_analysis import CostAnalysis, CostQuery, GroupBy, GroupCost, Step
from core.infrastructure.inventory import (
    InventoryService,
    ResourceFilter,
    parse_tag,
)
from core.infrastructure.providers import ProviderFields, ProviderFilter, ProviderService
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal, authorize
from core.security.authorization import Resource as Scope
from core.security.egress import EgressPolicy

router = APIRouter(prefix="/infrastructure", tags=["infrastructure"])


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID
    name: str = Field(max_length=63, examples=["aws-prod"])
    type: str = Field(examples=["aws"], description="aws, gcp, azure or kubernetes")
    regions: list[str] = Field(default_factory=list, max_length=50, examples=[["eu-west-1"]])
    config: dict[str, Any] = Field(
        default_factory=dict, description="Shown settings, e.g. a GCP project or account id"
    )
    credentials: dict[str, str] = Field(
        default_factory=dict, description="Stored encrypted, never returned (names are shown)"
    )


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    type: str
    regions: list[str]
    config: dict[str, Any]
    credential_names: list[str]
    created_at: datetime


class ResourceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    provider_id: uuid.UUID
    environment_id: uuid.UUID | None
    type: str
    identifier: str
    name: str
    region: str | None
    tags: dict[str, str]
    status: str
    cost_monthly: Decimal | None = Field(description="Estimated or collected, per month")
    stack: str | None
    created_at: datetime


class RelatedOut(BaseModel):
    relationship_type: str
    direction: str = Field(description="What the other resource is to this one: parent, child")
    resource: ResourceOut


class ResourceDetailOut(ResourceOut):
    properties: dict[str, Any]
    related: list[RelatedOut]


class ViolationOut(BaseModel):
    rule: str
    severity: str
    message: str
    resource_id: uuid.UUID | None
    resource: str
    type: str


class RuleSummary(BaseModel):
    id: str
    severity: str
    description: str
    violations: int


class ComplianceOut(BaseModel):
    resources: int = Field(description="Active resources evaluated")
    compliant: int = Field(description="Resources without any violation")
    blocking: int = Field(description="Violations of blocking rules")
    warnings: int
    rules: list[RuleSummary]
    violations: list[ViolationOut]


@router.get("/providers", response_model=PageOut[ProviderOut], summary="List providers")
async def list_providers(
    request: Request,
    session: DbSession,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None),
    type: str | None = Query(None, max_length=20),
    page: PageRequest = Depends(page_params),
) -> PageOut[ProviderOut]:
    f = ProviderFilter(Visibility.of(principal, "infrastructure:read"), org_id=org_id, type=type)
    found = await ProviderService(session).search(f, page)
    return page_response(request, found, ProviderOut.model_validate)


@router.post(
    "/providers",
    response_model=ProviderOut,
    status_code=201,
    summary="Add a provider (infrastructure:provision on the organization)",
)
async def create_provider(
    body: ProviderIn,
    session: DbSession,
    state: State,
    principal: Principal = require("infrastructure:provision", ANY_SCOPE),
) -> ProviderOut:
    await check_provider_urls(body.config, EgressPolicy.of(state.settings))
    org = await OrganizationService(session).get(body.org_id)
    authorize(principal, "infrastructure:provision", Scope(organization_id=org.id))
    fields = ProviderFields(**body.model_dump(exclude={"org_id"}))
    return ProviderOut.model_validate(await ProviderService(session).create(org, fields))


@router.get("/resources", response_model=PageOut[ResourceOut], summary="The resource inventory")
async def list_resources(
    request: Request,
    session: DbSession,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
    provider_id: uuid.UUID | None = Query(None),
    type: str | None = Query(None, max_length=200),
    environment_id: uuid.UUID | None = Query(None),
    team: str | None = Query(None, max_length=63, description="The team tag"),
    tag: list[str] = Query(default_factory=list, description="key=value, repeatable"),
    status: str | None = Query(None, max_length=20),
    page: PageRequest = Depends(page_params),
) -> PageOut[ResourceOut]:
    f = ResourceFilter(
        Visibility.of(principal, "infrastructure:read"),
        provider_id=provider_id,
        type=type,
        environment_id=environment_id,
        team=team,
        tags=tuple(parse_tag(t) for t in tag),
        status=status,
    )
    found = await InventoryService(session).search(f, page)
    return page_response(request, found, ResourceOut.model_validate)


@router.get(
    "/resources/{resource_id}",
    response_model=ResourceDetailOut,
    summary="A resource with its relationships",
)
async def get_resource(
    resource_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
) -> ResourceDetailOut:
    inventory = InventoryService(session)
    row, provider = await inventory.get(resource_id)
    where = Scope(organization_id=provider.org_id, environment_id=row.environment_id)
    authorize(principal, "infrastructure:read", where)
    related = [
        RelatedOut(
            relationship_type=r.relationship_type,
            direction=r.direction,
            resource=ResourceOut.model_validate(r.resource),
        )
        for r in await inventory.related(row)
    ]
    base = ResourceOut.model_validate(row).model_dump()
    return ResourceDetailOut(**base, properties=row.properties, related=related)


@router.get(
    "/compliance",
    response_model=ComplianceOut,
    summary="Compliance of the active resources you can see: a summary and each violation",
)
async def compliance(
    session: DbSession,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None),
    provider_id: uuid.UUID | None = Query(None),
    environment_id: uuid.UUID | None = Query(None),
) -> ComplianceOut:
    subjects = await InventoryService(session).subjects(
        Visibility.of(principal, "infrastructure:read"),
        org_id=org_id,
        provider_id=provider_id,
        environment_id=environment_id,
    )
    violations = evaluate(subjects)
    failing = {v.subject.resource_id for v in violations}
    return ComplianceOut(
        resources=len(subjects),
        compliant=sum(1 for s in subjects if s.resource_id not in failing),
        blocking=sum(1 for v in violations if v.severity == "blocking"),
        warnings=sum(1 for v in violations if v.severity == "warning"),
        rules=[
            RuleSummary(
                id=r.id,
                severity=r.severity,
                description=r.description,
                violations=sum(1 for v in violations if v.rule == r.id),
            )
            for r in RULES
        ],
        violations=[
            ViolationOut(
                rule=v.rule,
                severity=v.severity,
                message=v.message,
                resource_id=uuid.UUID(v.subject.resource_id) if v.subject.resource_id else None,
                resource=v.subject.name,
                type=v.subject.type,
            )
            for v in violations
        ],
    )


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    org_id: uuid.UUID
    team_id: uuid.UUID | None = None
    environment_id: uuid.UUID | None = None
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=4, description="Per month")
    currency: str = Field("USD", pattern="^[A-Z]{3}$")


class BudgetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    org_id: uuid.UUID
    team_id: uuid.UUID | None
    environment_id: uuid.UUID | None
    amount: Decimal
    currency: str
    notified_month: str | None
    created_at: datetime


class GroupOut(BaseModel):
    key: str
    label: str
    total: Decimal
    previous: Decimal
    change: Decimal
    change_pct: float | None


class PointOut(BaseModel):
    period: date = Field(description="The day, the Monday of the week, or the month's first day")
    values: dict[str, Decimal] = Field(description="Cost per group key")


class BudgetLineOut(BaseModel):
    budget_id: uuid.UUID
    scope: str
    amount: Decimal
    spent: Decimal = Field(description="In the month of the window's end, up to it")
    currency: str
    status: str = Field(description="ok or exceeded")


class CostsOut(BaseModel):
    start: date
    end: date
    previous_start: date
    previous_end: date
    group_by: str
    step: str
    total: Decimal
    previous_total: Decimal
    change: Decimal
    change_pct: float | None
    groups: list[GroupOut]
    series: list[PointOut]
    top_movers: list[GroupOut]
    budgets: list[BudgetLineOut]


def _group(g: GroupCost) -> GroupOut:
    return GroupOut(
        key=g.key,
        label=g.label,
        total=g.total,
        previous=g.previous,
        change=g.change,
        change_pct=g.change_pct,
    )


@router.post(
    "/budgets",
    response_model=BudgetOut,
    status_code=201,
    summary="Set a monthly budget for a team and/or an environment (infrastructure:provision)",
)
async def create_budget(
    body: BudgetIn,
    session: DbSession,
    principal: Principal = require("infrastructure:provision", ANY_SCOPE),
) -> BudgetOut:
    org = await OrganizationService(session).get(body.org_id)
    authorize(principal, "infrastructure:provision", Scope(organization_id=org.id))
    row = await BudgetService(session).create(
        org, body.amount, body.currency, team_id=body.team_id, environment_id=body.environment_id
    )
    return BudgetOut.model_validate(row)


@router.get("/budgets", response_model=list[BudgetOut], summary="Budgets you can see")
async def list_budgets(
    session: DbSession,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
    org_id: uuid.UUID | None = Query(None),
) -> list[BudgetOut]:
    rows = await BudgetService(session).list(
        Visibility.of(principal, "infrastructure:read"), org_id
    )
    return [BudgetOut.model_validate(r) for r in rows]


@router.get("/costs", response_model=CostsOut, summary="Cost analysis over a window")
async def costs(
    session: DbSession,
    principal: Principal = require("infrastructure:read", ANY_SCOPE),
    start: date | None = Query(None, description="Default: 30 days before end"),
    end: date | None = Query(None, description="Inclusive; default: yesterday (UTC)"),
    group_by: GroupBy = Query("team"),
    step: Step = Query("day"),
    limit: int = Query(10, ge=1, le=100, description="Groups shown; the rest are (other)"),
    org_id: uuid.UUID | None = Query(None),
) -> CostsOut:
    end = end or (datetime.now(UTC) - timedelta(days=1)).date()
    start = start or end - timedelta(days=29)
    report = await CostAnalysis(session).report(
        CostQuery(
            Visibility.of(principal, "infrastructure:read"),
            start,
            end,
            group_by=group_by,
            step=step,
            limit=limit,
            org_id=org_id,
        )
    )
    change = report.total - report.previous_total
    return CostsOut(
        start=start,
        end=end,
        previous_start=report.previous_start,
        previous_end=report.previous_end,
        group_by=group_by,
        step=step,
        total=report.total,
        previous_total=report.previous_total,
        change=change,
        change_pct=float(change / report.previous_total * 100) if report.previous_total else None,
        groups=[_group(g) for g in report.groups],
        series=[PointOut(period=p, values=v) for p, v in report.series],
        top_movers=[_group(g) for g in report.movers],
        budgets=[
            BudgetLineOut(
                budget_id=b.budget_id,
                scope=b.scope,
                amount=b.amount,
                spent=b.spent,
                currency=b.currency,
                status=b.status,
            )
            for b in report.budgets
        ],
    )
