"""Services of the catalog: registration, lookup, listing with filters, changes and soft
deletion. A service belongs to an owner team (and so to the team's organization); its name is
unique among the organization's live services."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.catalog.dependencies import lock_graph
from core.catalog.repositories import parse_repository_url
from core.db.types import utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.git_hosts.bindings import Proven, RepositoryBindings
from core.identity.organizations import EVERYTHING, Visibility, check_slug, flush_unique
from core.models.catalog import Service, ServiceDependency, ServiceTag
from core.models.identity import Team
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import Principal, Resource, authorize

KINDS = ("component", "api", "system", "resource")
LIFECYCLES = ("experimental", "production", "deprecated")
MAX_TAGS = 50


def service_resource(service: Service) -> Resource:
    """Where a service sits, for authorization: its owner team in its organization."""
    return Resource(organization_id=service.org_id, team_id=service.owner_team_id)


async def authorized_service(
    session: AsyncSession, service_id: uuid.UUID, principal: Principal, permission: str
) -> Service:
    """The live service, if `principal` holds `permission` on its owner team (else 403)."""
    service = await ServiceService(session).get(service_id)
    authorize(principal, permission, service_resource(service))
    return service


def check_choice(value: str, choices: Sequence[str], field_name: str) -> str:
    if value not in choices:
        raise ValidationFailed.on(
            field_name, f"{field_name} must be one of {', '.join(choices)}, not {value!r}"
        )
    return value


def check_tags(tags: Iterable[str]) -> list[str]:
    """Tags are slugs (lower case), deduplicated, in the order given."""
    out: list[str] = []
    for tag in tags:
        check_slug(tag, "tags")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValidationFailed.on("tags", f"at most {MAX_TAGS} tags")
    return out


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unbalanced [ in the host
        return None


def check_docs(docs: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    out = []
    for i, link in enumerate(docs):
        url = str(link.get("url", "")).strip()
        if not url.startswith(("https://", "http://")) or not _hostname(url):
            raise ValidationFailed.on(
                f"docs[{i}].url", f"documentation link {url!r} is not an http(s) URL"
            )
        out.append({"title": str(link.get("title") or url).strip(), "url": url})
    return out


@dataclass
class ServiceFields:
    """What a registration or an import sets. `None` in an update leaves a field unchanged."""

    name: str | None = None
    description: str | None = None
    repository_url: str | None = None  # "" clears it
    docs: list[dict[str, str]] | None = None
    tags: list[str] | None = None
    lifecycle: str | None = None
    kind: str | None = None
    type: str | None = None
    system: str | None = None
    provides_apis: list[str] | None = None
    annotations: dict[str, str] | None = None


@dataclass(frozen=True)
class ServiceFilter:
    org_id: uuid.UUID | None = None
    owner_team_id: uuid.UUID | None = None
    name: str | None = None  # exact name
    tag: str | None = None
    lifecycle: str | None = None
    kind: str | None = None
    q: str | None = None  # part of the name or the description
    visible: Visibility = EVERYTHING


@dataclass(frozen=True)
class ServiceView:
    """A service with its tags (a separate table, loaded in one query per page)."""

    service: Service
    tags: list[str] = field(default_factory=list)


class ServiceService:
    """`proven` is what `core.git_hosts.bindings.prove` found for the repositories a request
    binds (checked through the host's API before the request writes anything)."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        git_hosts: Mapping[str, str] | None = None,
        proven: Proven | None = None,
    ) -> None:
        self.session = session
        self.audit = AuditService(session)
        self.git_hosts = git_hosts or {}
        self.bindings = RepositoryBindings(session, proven)

    async def get(self, service_id: uuid.UUID, *, include_deleted: bool = False) -> Service:
        service = await self.session.get(Service, service_id)
        if service is None or (service.is_deleted and not include_deleted):
            raise NotFound(f"service {service_id} not found", details={"id": str(service_id)})
        return service

    async def find_by_name(self, org_id: uuid.UUID, name: str) -> Service | None:
        stmt = select(Service).where(
            Service.org_id == org_id, Service.name == name, Service.deleted_at.is_(None)
        )
        return (await self.session.scalars(stmt)).first()

    async def tags(self, service_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        found: dict[uuid.UUID, list[str]] = {sid: [] for sid in service_ids}
        if service_ids:
            stmt = (
                select(ServiceTag)
                .where(ServiceTag.service_id.in_(service_ids))
                .order_by(ServiceTag.tag)
            )
            for row in await self.session.scalars(stmt):
                found[row.service_id].append(row.tag)
        return found

    async def view(self, service: Service) -> ServiceView:
        return ServiceView(service, (await self.tags([service.id]))[service.id])

    def _apply(self, service: Service, fields: ServiceFields) -> None:
        if fields.name is not None:
            service.name = check_slug(fields.name, "name")
        if fields.description is not None:
            service.description = fields.description.strip()
        if fields.repository_url is not None:
            if fields.repository_url == "":
                service.repository_url = service.repository_host = service.repository_path = None
            else:
                repo = parse_repository_url(fields.repository_url, self.git_hosts)
                service.repository_url = repo.url
                service.repository_host = repo.host_kind
                service.repository_path = repo.key
        if fields.docs is not None:
            service.docs = check_docs(fields.docs)
        if fields.lifecycle is not None:
            service.lifecycle = check_choice(fields.lifecycle, LIFECYCLES, "lifecycle")
        if fields.kind is not None:
            service.kind = check_choice(fields.kind, KINDS, "kind")
        if fields.type is not None:
            service.type = fields.type.strip() or None
        if fields.system is not None:
            service.system = check_slug(fields.system, "system") if fields.system else None
        if fields.provides_apis is not None:
            service.provides_apis = [check_slug(a, "provides_apis") for a in fields.provides_apis]
        if fields.annotations is not None:
            service.annotations = {str(k): str(v) for k, v in fields.annotations.items()}

    async def _bind(self, service: Service, before: str | None, asked: bool) -> None:
        """Bind the service's repository to its organization when it is set or changed (409
        when another organization holds it), and release the one it left."""
        key = service.repository_path
        if key and service.repository_url and (asked or key != before):
            repo = parse_repository_url(service.repository_url, self.git_hosts)
            await self.bindings.bind(service.org_id, repo)
        if before and before != key:
            await self.session.flush()
            await self.bindings.release_unused(service.org_id, before)

    async def _set_tags(self, service: Service, tags: list[str]) -> None:
        await self.session.execute(delete(ServiceTag).where(ServiceTag.service_id == service.id))
        self.session.add_all(ServiceTag(service_id=service.id, tag=t) for t in tags)

    async def _check_name_free(self, org_id: uuid.UUID, name: str, own: uuid.UUID | None) -> None:
        holder = await self.find_by_name(org_id, name)
        if holder is not None and holder.id != own:
            raise Conflict(
                f"a service named {name} already exists in this organization",
                details={"name": name, "id": str(holder.id)},
            )

    async def _flush(self, service: Service) -> None:
        await flush_unique(
            self.session,
            f"a service named {service.name} already exists in this organization",
            {"name": service.name},
        )

    async def create(self, team: Team, fields: ServiceFields) -> ServiceView:
        if fields.name is None:
            raise ValidationFailed.on("name", "name is required")
        service = Service(org_id=team.org_id, owner_team_id=team.id, name="", docs=[])
        self._apply(service, replace(fields, tags=None))
        tags = sorted(check_tags(fields.tags or []))  # as every read returns them
        await self._check_name_free(team.org_id, service.name, None)
        await self._bind(service, None, True)
        self.session.add(service)
        await self._flush(service)
        await self._set_tags(service, tags)
        await self.session.flush()
        view = ServiceView(service, tags)
        await self.audit.record(
            "service.create", "service", service.id, after=service_snapshot(view)
        )
        return view

    async def update(
        self, service: Service, fields: ServiceFields, *, owner: Team | None = None
    ) -> ServiceView:
        """Change fields (and the owner team, within the organization); audited before/after."""
        before = service_snapshot(await self.view(service))
        if fields.name is not None and fields.name != service.name:
            await self._check_name_free(service.org_id, check_slug(fields.name, "name"), service.id)
        self._apply(service, replace(fields, tags=None))
        await self._bind(service, before["repository_path"], fields.repository_url is not None)
        if owner is not None and owner.id != service.owner_team_id:
            if owner.org_id != service.org_id:
                raise ValidationFailed.on(
                    "owner_team_id", "the new owner team must be in the service's organization"
                )
            service.owner_team_id = owner.id
        if fields.tags is not None and sorted(check_tags(fields.tags)) != before["tags"]:
            await self._set_tags(service, check_tags(fields.tags))
            service.updated_at = utcnow()  # the tags live in their own table
        await self._flush(service)
        view = await self.view(service)
        after = service_snapshot(view)
        if after != before:
            await self.audit.record(
                "service.update", "service", service.id, before=before, after=after
            )
        return view

    async def delete(self, service: Service) -> None:
        """Soft delete. Refused while live services depend on it (409 naming them)."""
        await lock_graph(self.session, service.org_id)
        dependents = await self.session.scalars(
            select(Service.name)
            .join(ServiceDependency, ServiceDependency.service_id == Service.id)
            .where(
                ServiceDependency.depends_on_service_id == service.id,
                Service.deleted_at.is_(None),
            )
            .order_by(Service.name)
            .distinct()
        )
        names = list(dependents)
        if names:
            raise Conflict(
                f"{len(names)} service(s) depend on {service.name}: {', '.join(names[:10])}; "
                "remove those dependencies first",
                details={"dependents": names},
            )
        before = service_snapshot(await self.view(service))
        service.soft_delete()
        # Its own outgoing edges go with it, so the graph never shows a deleted service.
        await self.session.execute(
            delete(ServiceDependency).where(ServiceDependency.service_id == service.id)
        )
        await self.session.flush()
        if service.repository_path:
            await self.bindings.release_unused(service.org_id, service.repository_path)
        await self.audit.record("service.delete", "service", service.id, before=before)

    def _query(self, f: ServiceFilter) -> Select[Any]:
        stmt = select(Service).where(Service.deleted_at.is_(None))
        if not f.visible.everything:
            stmt = stmt.where(f.visible.where(Service.org_id, Service.owner_team_id))
        if f.org_id is not None:
            stmt = stmt.where(Service.org_id == f.org_id)
        if f.owner_team_id is not None:
            stmt = stmt.where(Service.owner_team_id == f.owner_team_id)
        if f.name is not None:
            stmt = stmt.where(Service.name == f.name)
        if f.lifecycle is not None:
            stmt = stmt.where(
                Service.lifecycle == check_choice(f.lifecycle, LIFECYCLES, "lifecycle")
            )
        if f.kind is not None:
            stmt = stmt.where(Service.kind == check_choice(f.kind, KINDS, "kind"))
        if f.tag is not None:
            stmt = stmt.where(
                exists().where(ServiceTag.service_id == Service.id, ServiceTag.tag == f.tag)
            )
        if f.q:  # % and _ are themselves, not wildcards
            stmt = stmt.where(
                or_(
                    Service.name.contains(f.q.lower(), autoescape=True),
                    Service.description.icontains(f.q, autoescape=True),
                )
            )
        return stmt

    async def list(self, f: ServiceFilter, page: PageRequest) -> Page[ServiceView]:
        found = await paginate(self.session, self._query(f), page, order=(Service.name, Service.id))
        tags = await self.tags([s.id for s in found.items])
        return Page(
            items=[ServiceView(s, tags[s.id]) for s in found.items],
            limit=found.limit,
            next_cursor=found.next_cursor,
            next_offset=found.next_offset,
        )


def service_snapshot(view: ServiceView) -> dict[str, Any]:
    """The service's columns and tags, for audit before/after."""
    return {**snapshot(view.service), "tags": list(view.tags)}
