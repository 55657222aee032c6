"""Dependencies between services: a service's direct dependencies are replaced as a set;
runtime dependencies may not form a cycle; the graph around a service is read level by level
to a depth, in either direction, as nodes and edges (or Mermaid text)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Integer, Uuid, delete, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService
from core.catalog.versions import VersionService, check_constraint, satisfying
from core.errors import Conflict, ValidationFailed
from core.models.catalog import Service, ServiceDependency
from core.models.identity import Organization

DEPENDENCY_TYPES = ("runtime", "build", "data")
MAX_DEPTH = 10
MAX_DEPENDENCIES = 500
Direction = Literal["dependencies", "dependents", "both"]


@dataclass(frozen=True)
class DependencySpec:
    """One direct dependency as asked for: the target by id, its type and version range."""

    depends_on: uuid.UUID
    type: str = "runtime"
    version_constraint: str | None = None


@dataclass
class Node:
    id: uuid.UUID
    name: str
    kind: str
    lifecycle: str
    owner_team_id: uuid.UUID
    depth: int  # 0: the service asked about; >0 dependencies; <0 dependents
    latest_version: str | None = None


@dataclass
class Edge:
    source: uuid.UUID  # depends on
    target: uuid.UUID
    type: str
    version_constraint: str | None
    satisfied: bool | None = None  # None: no constraint
    satisfying_versions: list[str] = field(default_factory=list)


@dataclass
class Graph:
    root: uuid.UUID
    depth: int
    nodes: list[Node]
    edges: list[Edge]
    problems: list[dict[str, Any]]

    def mermaid(self) -> str:
        """Mermaid flowchart text: `a --> b` means a depends on b."""
        ids = {n.id: f"n{i}" for i, n in enumerate(self.nodes)}
        lines = ["graph LR"]
        for node in self.nodes:
            lines.append(f'  {ids[node.id]}["{node.name}"]')
        for edge in self.edges:
            label = edge.type + (f" {edge.version_constraint}" if edge.version_constraint else "")
            arrow = "-.->" if edge.satisfied is False else "-->"
            lines.append(f'  {ids[edge.source]} {arrow}|"{label}"| {ids[edge.target]}')
        lines.append(f"  style {ids[self.root]} stroke-width:3px")
        return "\n".join(lines) + "\n"


async def lock_graph(session: AsyncSession, org_id: uuid.UUID) -> None:
    """One change of an organization's dependency graph at a time (until the transaction
    ends), so that concurrent changes cannot each miss the other's: two new edges closing a
    cycle together, or an edge to a service being deleted. PostgreSQL locks the organization's
    row; SQLite serialises writers anyway and renders no FOR UPDATE."""
    await session.execute(
        select(Organization.id).where(Organization.id == org_id).with_for_update()
    )


class DependencyService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def direct(self, service: Service) -> list[ServiceDependency]:
        stmt = (
            select(ServiceDependency)
            .where(ServiceDependency.service_id == service.id)
            .order_by(ServiceDependency.created_at, ServiceDependency.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def _targets(
        self, service: Service, specs: Sequence[DependencySpec]
    ) -> dict[uuid.UUID, Service]:
        ids = {s.depends_on for s in specs}
        rows = await self.session.scalars(
            select(Service).where(Service.id.in_(ids), Service.deleted_at.is_(None))
        )
        found = {s.id: s for s in rows}
        for i, spec in enumerate(specs):
            target = found.get(spec.depends_on)
            if target is None or target.org_id != service.org_id:
                raise ValidationFailed.on(
                    f"dependencies[{i}].service_id",
                    f"service {spec.depends_on} not found in {service.name}'s organization",
                )
        return found

    def _check(self, service: Service, specs: Sequence[DependencySpec]) -> list[DependencySpec]:
        if len(specs) > MAX_DEPENDENCIES:
            raise ValidationFailed.on(
                "dependencies", f"at most {MAX_DEPENDENCIES} direct dependencies"
            )
        seen: set[tuple[uuid.UUID, str]] = set()
        out = []
        for i, spec in enumerate(specs):
            if spec.type not in DEPENDENCY_TYPES:
                raise ValidationFailed.on(
                    f"dependencies[{i}].type",
                    f"type must be one of {', '.join(DEPENDENCY_TYPES)}, not {spec.type!r}",
                )
            if spec.depends_on == service.id:
                raise ValidationFailed.on(
                    f"dependencies[{i}].service_id", "a service cannot depend on itself"
                )
            if (spec.depends_on, spec.type) in seen:
                raise ValidationFailed.on(
                    f"dependencies[{i}]",
                    f"{spec.depends_on} is listed twice as a {spec.type} dependency",
                )
            seen.add((spec.depends_on, spec.type))
            try:
                constraint = check_constraint(spec.version_constraint)
            except ValidationFailed as exc:
                raise ValidationFailed.on(
                    f"dependencies[{i}].version_constraint", exc.message
                ) from None
            out.append(DependencySpec(spec.depends_on, spec.type, constraint))
        return out

    async def find_cycle(
        self, service: Service, runtime_targets: Sequence[uuid.UUID]
    ) -> list[uuid.UUID] | None:
        """The runtime cycle that edges service -> each target would close, as the ids along it
        (starting and ending at the service), or None. The service's current outgoing edges
        are ignored: they are the ones being replaced."""
        parent: dict[uuid.UUID, uuid.UUID] = {t: service.id for t in runtime_targets}
        frontier = list(dict.fromkeys(runtime_targets))
        while frontier:
            if service.id in parent and service.id in frontier:
                break
            stmt = select(
                ServiceDependency.service_id, ServiceDependency.depends_on_service_id
            ).where(
                ServiceDependency.service_id.in_(frontier),
                ServiceDependency.service_id != service.id,
                ServiceDependency.type == "runtime",
            )
            nxt = []
            for source, target in (await self.session.execute(stmt)).all():
                if target not in parent:
                    parent[target] = source
                    nxt.append(target)
            frontier = nxt
        if service.id not in parent:
            return None
        path = [service.id]
        node = parent[service.id]
        while node != service.id:
            path.append(node)
            node = parent[node]
        path.append(service.id)
        path.reverse()
        return path

    async def names(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        rows = await self.session.execute(
            select(Service.id, Service.name).where(Service.id.in_(ids))
        )
        return {sid: name for sid, name in rows.all()}

    async def cycle_error(self, cycle: list[uuid.UUID]) -> Conflict:
        names = await self.names(cycle)
        path = [names.get(i, str(i)) for i in cycle]
        return Conflict(
            f"this would create a runtime dependency cycle: {' -> '.join(path)}",
            code="dependency_cycle",
            details={"cycle": path, "cycle_ids": [str(i) for i in cycle]},
        )

    async def replace(
        self, service: Service, specs: Sequence[DependencySpec]
    ) -> list[ServiceDependency]:
        """Make `specs` the service's direct dependencies. Refuses (changing nothing) unknown
        targets, bad types or ranges, and a runtime cycle (409 `dependency_cycle`)."""
        checked = self._check(service, specs)
        await lock_graph(self.session, service.org_id)
        await self._targets(service, checked)
        cycle = await self.find_cycle(
            service, [s.depends_on for s in checked if s.type == "runtime"]
        )
        if cycle is not None:
            raise await self.cycle_error(cycle)
        before = [_edge_snapshot(d) for d in await self.direct(service)]
        await self.session.execute(
            delete(ServiceDependency).where(ServiceDependency.service_id == service.id)
        )
        rows = [
            ServiceDependency(
                service_id=service.id,
                depends_on_service_id=s.depends_on,
                type=s.type,
                version_constraint=s.version_constraint,
            )
            for s in checked
        ]
        self.session.add_all(rows)
        await self.session.flush()
        after = [_edge_snapshot(d) for d in rows]
        if sorted(before, key=str) != sorted(after, key=str):
            await self.audit.record(
                "service.dependencies.replace",
                "service",
                service.id,
                before={"dependencies": before},
                after={"dependencies": after},
            )
        return rows

    async def _walk(
        self, root: uuid.UUID, depth: int, reverse: bool, nodes: dict[uuid.UUID, int]
    ) -> list[ServiceDependency]:
        """The edges within `depth` levels of `root` in one direction, in two queries: a
        recursive walk for each reachable service's nearest level, then the edges leaving the
        services nearer than `depth`. A service first reached here gets its level in `nodes`
        (one reached in the other direction keeps its own)."""
        dep = ServiceDependency
        src, dst = (
            (dep.depends_on_service_id, dep.service_id)
            if reverse
            else (dep.service_id, dep.depends_on_service_id)
        )
        walk = select(literal(root, Uuid()).label("id"), literal(0, Integer()).label("level")).cte(
            "walk", recursive=True
        )
        walk = walk.union(
            select(dst.label("id"), (walk.c.level + 1).label("level"))
            .join(walk, src == walk.c.id)
            .where(walk.c.level < depth)
        )
        rows = await self.session.execute(
            select(walk.c.id, func.min(walk.c.level)).group_by(walk.c.id)
        )
        levels = {sid: int(level) for sid, level in rows.all()}
        for sid, level in levels.items():
            nodes.setdefault(sid, -level if reverse else level)
        inner = [sid for sid, level in levels.items() if level < depth]
        return list((await self.session.scalars(select(dep).where(src.in_(inner)))).all())

    async def graph(self, service: Service, depth: int = 1, direction: Direction = "both") -> Graph:
        if not 1 <= depth <= MAX_DEPTH:
            raise ValidationFailed.on("depth", f"depth must be between 1 and {MAX_DEPTH}")
        depths: dict[uuid.UUID, int] = {service.id: 0}
        edges: dict[uuid.UUID, ServiceDependency] = {}
        if direction in ("dependencies", "both"):
            edges.update((e.id, e) for e in await self._walk(service.id, depth, False, depths))
        if direction in ("dependents", "both"):
            edges.update((e.id, e) for e in await self._walk(service.id, depth, True, depths))
        rows = await self.session.execute(
            select(
                Service.id, Service.name, Service.kind, Service.lifecycle, Service.owner_team_id
            ).where(Service.id.in_(list(depths)), Service.deleted_at.is_(None))
        )
        services = {s.id: s for s in rows.all()}
        versions = await VersionService(self.session).versions_of(list(services))
        nodes = [
            Node(
                id=s.id,
                name=s.name,
                kind=s.kind,
                lifecycle=s.lifecycle,
                owner_team_id=s.owner_team_id,
                depth=depths[s.id],
                latest_version=next(iter(satisfying(None, versions[s.id])), None),
            )
            for s in services.values()
        ]
        nodes.sort(key=lambda n: (abs(n.depth), n.depth < 0, n.name))
        out_edges: list[Edge] = []
        problems: list[dict[str, Any]] = []
        for dep in sorted(
            edges.values(), key=lambda d: (str(d.service_id), str(d.depends_on_service_id), d.type)
        ):
            if dep.service_id not in services or dep.depends_on_service_id not in services:
                continue
            edge = Edge(dep.service_id, dep.depends_on_service_id, dep.type, dep.version_constraint)
            if dep.version_constraint is not None:
                edge.satisfying_versions = satisfying(
                    dep.version_constraint, versions[dep.depends_on_service_id]
                )
                edge.satisfied = bool(edge.satisfying_versions)
                if not edge.satisfied:
                    source = services[dep.service_id].name
                    target = services[dep.depends_on_service_id].name
                    problems.append(
                        {
                            "code": "unsatisfied_constraint",
                            "message": f"{source} needs {target} {dep.version_constraint}, "
                            "but no registered version of it satisfies that",
                            "source": str(dep.service_id),
                            "target": str(dep.depends_on_service_id),
                        }
                    )
            out_edges.append(edge)
        return Graph(service.id, depth, nodes, out_edges, problems)


def _edge_snapshot(dep: ServiceDependency) -> dict[str, Any]:
    return {
        "depends_on_service_id": str(dep.depends_on_service_id),
        "type": dep.type,
        "version_constraint": dep.version_constraint,
    }
