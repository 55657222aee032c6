"""The resource inventory: what was provisioned, where, tagged how, costing what, and how
resources relate (a database in a network, a node pool in a cluster)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import NotFound, ValidationFailed
from core.identity.organizations import Visibility
from core.infrastructure.compliance import Subject, facts
from core.models.infrastructure import Provider, Resource, ResourceRelationship
from core.pagination import Page, PageRequest, paginate

RESOURCE_STATUSES: tuple[str, ...] = ("active", "destroying", "destroyed", "failed")


def parse_tag(text: str) -> tuple[str, str]:
    """`key=value` (a tag filter) as a pair; ValidationFailed naming the `tag` parameter."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValidationFailed.on("tag", f"{text!r} is not a tag filter like team=web")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class ResourceFilter:
    visible: Visibility  # infrastructure:read
    provider_id: uuid.UUID | None = None
    type: str | None = None
    environment_id: uuid.UUID | None = None
    team: str | None = None  # the `team` tag
    tags: tuple[tuple[str, str], ...] = ()
    status: str | None = None


@dataclass(frozen=True)
class Related:
    relationship_type: str
    direction: str  # parent | child: what the other resource is to this one
    resource: Resource


class InventoryService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, resource_id: uuid.UUID) -> tuple[Resource, Provider]:
        row = await self.session.get(Resource, resource_id)
        if row is None:
            raise NotFound(f"resource {resource_id} not found")
        provider = await self.session.get(Provider, row.provider_id)
        assert provider is not None
        return row, provider

    def _query(self, f: ResourceFilter) -> Select[Any]:
        stmt = select(Resource).join(Provider, Provider.id == Resource.provider_id)
        if not f.visible.everything:
            stmt = stmt.where(
                or_(
                    Provider.org_id.in_(f.visible.organization_ids),
                    Resource.environment_id.in_(f.visible.environment_ids),
                )
            )
        for column, value in (
            (Resource.provider_id, f.provider_id),
            (Resource.type, f.type),
            (Resource.environment_id, f.environment_id),
            (Resource.status, f.status),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        tags = list(f.tags) + ([("team", f.team)] if f.team else [])
        for key, value in tags:
            stmt = stmt.where(Resource.tags[key].as_string() == value)
        return stmt

    async def search(self, f: ResourceFilter, page: PageRequest) -> Page[Resource]:
        return await paginate(
            self.session, self._query(f), page, order=(Resource.created_at, Resource.id)
        )

    async def related(self, resource: Resource) -> list[Related]:
        found: list[Related] = []
        for mine, theirs, direction in (
            (ResourceRelationship.child_id, ResourceRelationship.parent_id, "parent"),
            (ResourceRelationship.parent_id, ResourceRelationship.child_id, "child"),
        ):
            rows = await self.session.execute(
                select(ResourceRelationship.relationship_type, Resource)
                .join(Resource, Resource.id == theirs)
                .where(mine == resource.id)
                .order_by(Resource.name)
            )
            found += [Related(kind, direction, other) for kind, other in rows.all()]
        return found

    async def subjects(
        self,
        visible: Visibility,
        *,
        org_id: uuid.UUID | None = None,
        provider_id: uuid.UUID | None = None,
        environment_id: uuid.UUID | None = None,
    ) -> list[Subject]:
        """The active resources `visible` covers, as compliance subjects (the provider's
        regions are the allowed ones)."""
        stmt = (
            select(Resource, Provider)
            .join(Provider, Provider.id == Resource.provider_id)
            .where(Resource.status == "active")
            .order_by(Resource.created_at, Resource.id)
        )
        if not visible.everything:
            stmt = stmt.where(
                or_(
                    Provider.org_id.in_(visible.organization_ids),
                    Resource.environment_id.in_(visible.environment_ids),
                )
            )
        for column, value in (
            (Provider.org_id, org_id),
            (Resource.provider_id, provider_id),
            (Resource.environment_id, environment_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        return [
            subject_of(row, tuple(provider.regions))
            for row, provider in (await self.session.execute(stmt)).all()
        ]


def subject_of(row: Resource, allowed_regions: tuple[str, ...]) -> Subject:
    """Facts recorded with the resource (`stores_data`, `encrypted`, `public`) override
    what its type and inputs imply."""
    props = row.properties
    known: dict[str, Any] = {
        k: props[k] for k in ("stores_data", "encrypted", "public") if k in props
    }
    derived: dict[str, Any] = {**facts(row.type, props), **known}
    return Subject(
        name=row.name,
        type=row.type,
        region=row.region,
        tags=row.tags,
        allowed_regions=allowed_regions,
        resource_id=str(row.id),
        **derived,
    )
