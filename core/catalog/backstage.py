"""Backstage interoperability: import `catalog-info.yaml` documents (kinds Component, API,
System, Resource) into the catalog, idempotently, and export a service as one.

Import is two passes over the documents: entities first (created, updated or unchanged; each
in its own savepoint, so one refusal never undoes another entity), then relations
(`spec.dependsOn`, `spec.consumesApis`), where a target that does not exist or an edge that
would close a runtime cycle is refused on its own and everything else is kept."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import bounded_yaml
from core.audit import AuditService
from core.catalog.dependencies import DependencyService, DependencySpec
from core.catalog.repositories import parse_repository_url
from core.catalog.services import LIFECYCLES, ServiceFields, ServiceService, service_snapshot
from core.errors import AppError, ValidationFailed
from core.git_hosts.bindings import Proven
from core.models.catalog import Service
from core.models.identity import Organization, Team

API_VERSIONS = ("backstage.io/v1alpha1", "backstage.io/v1beta1")
IMPORTED_KINDS = {
    "component": "component",
    "api": "api",
    "system": "system",
    "resource": "resource",
}
EXPORT_KINDS = {"component": "Component", "api": "API", "system": "System", "resource": "Resource"}
MAX_DOCUMENTS = 1000
SOURCE_LOCATION = "backstage.io/source-location"
# Annotations naming the repository, most specific first: (annotation, host).
SLUG_ANNOTATIONS = (
    ("github.com/project-slug", "github.com"),
    ("gitlab.com/project-slug", "gitlab.com"),
)


@dataclass
class RelationReport:
    relation: str  # dependsOn | consumesApis
    target: str  # the entity ref as written
    action: str  # added | refused
    reason: str | None = None
    cycle: list[str] | None = None


@dataclass
class EntityReport:
    index: int  # position of the document in the input
    ref: str | None  # kind:namespace/name
    action: str  # created | updated | unchanged | refused | skipped
    service_id: uuid.UUID | None = None
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    relations: list[RelationReport] = field(default_factory=list)


@dataclass
class ImportReport:
    entities: list[EntityReport]

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entity in self.entities:
            counts[entity.action] = counts.get(entity.action, 0) + 1
        refused = sum(1 for e in self.entities for r in e.relations if r.action == "refused")
        return {**counts, "relations_refused": refused}


@dataclass(frozen=True)
class EntityRef:
    kind: str | None  # lower case, None when the ref did not say
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind or '?'}:{self.namespace}/{self.name}"


def parse_ref(ref: str, default_kind: str | None = None) -> EntityRef:
    """`[kind:][namespace/]name` as Backstage writes entity references."""
    kind, sep, rest = ref.partition(":")
    if not sep:
        kind, rest = default_kind or "", ref
    namespace, sep, name = rest.rpartition("/")
    return EntityRef(kind.lower() or None, namespace or "default", name)


class _Refused(Exception):
    """This entity cannot be imported; the message says why."""


@dataclass
class _Parsed:
    report: EntityReport
    kind: str
    name: str
    owner: str
    fields: ServiceFields
    depends_on: list[str]
    consumes: list[str]


def load_documents(text: str) -> list[Any]:
    try:
        docs = [d for d in bounded_yaml.load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        message = f"the catalog file is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        raise ValidationFailed(
            message, details=[{"field": "content", "message": message}]
        ) from None
    if not docs:
        raise ValidationFailed("the catalog file holds no documents")
    if len(docs) > MAX_DOCUMENTS:
        raise ValidationFailed(f"at most {MAX_DOCUMENTS} documents per import")
    return docs


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Refused(f"{where} must be a list of strings")
    return list(value)


def _repository(
    annotations: dict[str, str], warnings: list[str], git_hosts: dict[str, str]
) -> str | None:
    candidates = [
        f"https://{host}/{annotations[key]}"
        for key, host in SLUG_ANNOTATIONS
        if annotations.get(key)
    ]
    location = annotations.get(SOURCE_LOCATION, "")
    if location.startswith("url:"):
        candidates.append(location.removeprefix("url:"))
    for url in candidates:
        try:
            return parse_repository_url(url, git_hosts).url
        except ValidationFailed as exc:
            warnings.append(f"repository not recorded: {exc.message}")
    return None


def _parse(index: int, doc: Any, git_hosts: dict[str, str]) -> _Parsed | EntityReport:
    """One document as what to register, or a report of why it is skipped or refused."""
    if not isinstance(doc, dict):
        return EntityReport(index, None, "refused", reasons=["the document is not a mapping"])
    kind_raw = str(doc.get("kind", ""))
    meta = _mapping(doc.get("metadata"))
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
    kind = IMPORTED_KINDS.get(kind_raw.lower())
    ref = f"{kind_raw.lower() or '?'}:{namespace}/{name or '?'}"
    report = EntityReport(index, ref, "refused")
    if doc.get("apiVersion") not in API_VERSIONS:
        report.reasons.append(
            f"apiVersion {doc.get('apiVersion')!r} is not one of {', '.join(API_VERSIONS)}"
        )
        return report
    if kind is None:
        report.action = "skipped"
        report.reasons.append(
            f"kind {kind_raw or '(none)'} is not imported "
            "(imported: Component, API, System, Resource)"
        )
        return report
    if not name:
        report.reasons.append("metadata.name is missing")
        return report
    spec = _mapping(doc.get("spec"))
    try:
        owner = spec.get("owner")
        if not isinstance(owner, str) or not owner:
            raise _Refused("spec.owner is missing: every service is owned by a team")
        lifecycle = spec.get("lifecycle", "experimental")
        if kind in ("component", "api") and lifecycle not in LIFECYCLES:
            raise _Refused(
                f"spec.lifecycle must be one of {', '.join(LIFECYCLES)}, not {lifecycle!r}"
            )
        annotations = meta.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise _Refused("metadata.annotations must be a mapping")
        annotations = {str(k): str(v) for k, v in annotations.items()}
        repository = _repository(annotations, report.warnings, git_hosts)
        if repository:  # kept as repository_url; the export writes these annotations again
            for key in (SOURCE_LOCATION, *(k for k, _ in SLUG_ANNOTATIONS)):
                annotations.pop(key, None)
        links = meta.get("links") or []
        if not isinstance(links, list) or not all(isinstance(x, dict) for x in links):
            raise _Refused("metadata.links must be a list of {url, title}")
        provides = [
            parse_ref(r, "api").name
            for r in _strings(spec.get("providesApis"), "spec.providesApis")
        ]
        fields = ServiceFields(
            name=name,
            description=str(meta.get("description") or meta.get("title") or ""),
            repository_url=repository or "",
            docs=[
                {"title": str(x.get("title") or ""), "url": str(x.get("url") or "")} for x in links
            ],
            tags=_strings(meta.get("tags"), "metadata.tags"),
            lifecycle=lifecycle if lifecycle in LIFECYCLES else "production",
            kind=kind,
            type=str(spec.get("type") or ""),
            system=parse_ref(spec["system"], "system").name
            if isinstance(spec.get("system"), str)
            else "",
            provides_apis=provides,
            annotations=annotations,
        )
        return _Parsed(
            report=report,
            kind=kind,
            name=name,
            owner=owner,
            fields=fields,
            depends_on=_strings(spec.get("dependsOn"), "spec.dependsOn"),
            consumes=_strings(spec.get("consumesApis"), "spec.consumesApis"),
        )
    except _Refused as exc:
        report.reasons.append(str(exc))
        return report


def _unchanged(before: dict[str, Any], after: dict[str, Any]) -> bool:
    ignore = {"updated_at", "updated_by"}
    return {k: v for k, v in before.items() if k not in ignore} == {
        k: v for k, v in after.items() if k not in ignore
    }


def repository_urls(documents: Sequence[Any], git_hosts: dict[str, str]) -> list[str | None]:
    """The repository URL of each importable document (what binding them needs proven)."""
    urls: list[str | None] = []
    for index, doc in enumerate(documents):
        parsed = _parse(index, doc, git_hosts)
        if not isinstance(parsed, EntityReport):
            urls.append(parsed.fields.repository_url)
    return urls


class BackstageImporter:
    """Imports into one organization. `may_write(team)` says whether the caller holds
    services:write on a team (the router's authorization, so the core knows no principals)."""

    def __init__(
        self,
        session: AsyncSession,
        org: Organization,
        may_write: Callable[[Team], bool],
        *,
        git_hosts: dict[str, str] | None = None,
        proven: Proven | None = None,
    ) -> None:
        self.session = session
        self.org = org
        self.may_write = may_write
        self.git_hosts = git_hosts or {}
        self.services = ServiceService(session, git_hosts=self.git_hosts, proven=proven)
        self.dependencies = DependencyService(session)

    async def _team(self, owner: str) -> Team:
        ref = parse_ref(owner, "group")
        if ref.kind not in ("group", None):
            raise _Refused(
                f"spec.owner {owner!r} is a {ref.kind}; services are owned by teams "
                "(group:<team slug>)"
            )
        team = (
            await self.session.scalars(
                select(Team).where(
                    Team.org_id == self.org.id, Team.slug == ref.name, Team.deleted_at.is_(None)
                )
            )
        ).first()
        if team is None:
            raise _Refused(
                f"spec.owner {owner!r}: no team with slug {ref.name!r} in organization "
                f"{self.org.slug}"
            )
        return team

    async def _entity(self, parsed: _Parsed) -> Service:
        team = await self._team(parsed.owner)
        if not self.may_write(team):
            raise _Refused(f"you lack services:write on team {team.slug}")
        existing = await self.services.find_by_name(self.org.id, parsed.name)
        if existing is None:
            view = await self.services.create(team, parsed.fields)
            parsed.report.action = "created"
            return view.service
        if existing.kind != parsed.kind:
            raise _Refused(
                f"the name {parsed.name} is already used by a {existing.kind} in this organization"
            )
        if existing.owner_team_id != team.id:
            current = await self.session.get(Team, existing.owner_team_id)
            if current is not None and not self.may_write(current):
                raise _Refused(
                    f"{parsed.name} is owned by team {current.slug}, where you lack services:write"
                )
        before = service_snapshot(await self.services.view(existing))
        view = await self.services.update(existing, parsed.fields, owner=team)
        parsed.report.action = (
            "unchanged" if _unchanged(before, service_snapshot(view)) else "updated"
        )
        return view.service

    async def _relations(self, parsed: _Parsed, service: Service) -> None:
        wanted: list[tuple[str, str, DependencySpec]] = []
        seen: set[tuple[uuid.UUID, str]] = set()
        refs = [("dependsOn", r, "component") for r in parsed.depends_on] + [
            ("consumesApis", r, "api") for r in parsed.consumes
        ]
        for relation, raw, default_kind in refs:
            ref = parse_ref(raw, default_kind)
            target = await self.services.find_by_name(self.org.id, ref.name)
            if target is None or (ref.kind is not None and target.kind != ref.kind):
                parsed.report.relations.append(
                    RelationReport(
                        relation,
                        raw,
                        "refused",
                        f"no {ref.kind or 'entity'} named {ref.name} in the catalog",
                    )
                )
                continue
            if target.id == service.id:
                parsed.report.relations.append(
                    RelationReport(relation, raw, "refused", "an entity cannot depend on itself")
                )
                continue
            dep_type = "data" if target.kind == "resource" else "runtime"
            if (target.id, dep_type) in seen:
                continue
            seen.add((target.id, dep_type))
            wanted.append((relation, raw, DependencySpec(target.id, dep_type)))
        while True:
            cycle = await self.dependencies.find_cycle(
                service, [s.depends_on for _, _, s in wanted if s.type == "runtime"]
            )
            if cycle is None:
                break
            # Drop the edge that starts the cycle; keep the others and look again.
            names = await self.dependencies.names(cycle)
            path = [names.get(i, str(i)) for i in cycle]
            closing = next(
                i
                for i, (_, _, s) in enumerate(wanted)
                if s.depends_on == cycle[1] and s.type == "runtime"
            )
            relation, raw, _ = wanted.pop(closing)
            parsed.report.relations.append(
                RelationReport(
                    relation,
                    raw,
                    "refused",
                    f"would create a runtime dependency cycle: {' -> '.join(path)}",
                    cycle=path,
                )
            )
        await self.dependencies.replace(service, [spec for _, _, spec in wanted])
        parsed.report.relations.extend(RelationReport(rel, raw, "added") for rel, raw, _ in wanted)

    async def run(self, documents: Sequence[Any]) -> ImportReport:
        reports: list[EntityReport] = []
        imported: list[tuple[_Parsed, Service]] = []
        for index, doc in enumerate(documents):
            parsed = _parse(index, doc, self.git_hosts)
            if isinstance(parsed, EntityReport):
                reports.append(parsed)
                continue
            reports.append(parsed.report)
            try:
                async with self.session.begin_nested():
                    service = await self._entity(parsed)
            except (_Refused, AppError) as exc:
                parsed.report.action = "refused"
                parsed.report.reasons.append(exc.message if isinstance(exc, AppError) else str(exc))
                continue
            parsed.report.service_id = service.id
            imported.append((parsed, service))
        for parsed, service in imported:
            try:
                async with self.session.begin_nested():
                    await self._relations(parsed, service)
            except AppError as exc:
                parsed.report.relations.append(
                    RelationReport("dependsOn", "*", "refused", exc.message)
                )
        report = ImportReport(reports)
        await AuditService(self.session).record(
            "catalog.import", "organization", self.org.id, after={"summary": report.summary()}
        )
        return report


async def export_entity(session: AsyncSession, service: Service) -> dict[str, Any]:
    """The service as a Backstage entity (what `catalog-info.yaml` holds)."""
    view = await ServiceService(session).view(service)
    team = await session.get(Team, service.owner_team_id)
    deps = await DependencyService(session).direct(service)
    targets = {
        s.id: s
        for s in await session.scalars(
            select(Service).where(Service.id.in_([d.depends_on_service_id for d in deps]))
        )
    }
    annotations = dict(service.annotations or {})
    if service.repository_url and service.repository_host in ("github", "gitlab"):
        key = f"{service.repository_host}.com/project-slug"
        if service.repository_url.startswith(f"https://{service.repository_host}.com/"):
            annotations.setdefault(key, service.repository_url.split("/", 3)[3])
    if service.repository_url:
        annotations.setdefault(SOURCE_LOCATION, f"url:{service.repository_url}")
    metadata: dict[str, Any] = {"name": service.name}
    if service.description:
        metadata["description"] = service.description
    if view.tags:
        metadata["tags"] = view.tags
    if service.docs:
        metadata["links"] = [dict(d) for d in service.docs]
    if annotations:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {}
    if service.type:
        spec["type"] = service.type
    if service.kind in ("component", "api", "resource") and not service.type:
        spec["type"] = {"component": "service", "api": "openapi", "resource": "database"}[
            service.kind
        ]
    if service.kind in ("component", "api"):
        spec["lifecycle"] = service.lifecycle
    spec["owner"] = f"group:{team.slug}" if team else str(service.owner_team_id)
    if service.system:
        spec["system"] = service.system
    depends = sorted(
        f"{targets[d.depends_on_service_id].kind}:{targets[d.depends_on_service_id].name}"
        for d in deps
        if d.depends_on_service_id in targets and targets[d.depends_on_service_id].kind != "api"
    )
    consumes = sorted(
        f"api:{targets[d.depends_on_service_id].name}"
        for d in deps
        if d.depends_on_service_id in targets and targets[d.depends_on_service_id].kind == "api"
    )
    if depends:
        spec["dependsOn"] = list(dict.fromkeys(depends))
    if consumes:
        spec["consumesApis"] = list(dict.fromkeys(consumes))
    if service.provides_apis:
        spec["providesApis"] = [f"api:{a}" for a in service.provides_apis]
    return {
        "apiVersion": API_VERSIONS[0],
        "kind": EXPORT_KINDS[service.kind],
        "metadata": metadata,
        "spec": spec,
    }


def dump_yaml(entity: dict[str, Any]) -> str:
    return yaml.safe_dump(entity, sort_keys=False, allow_unicode=True)
