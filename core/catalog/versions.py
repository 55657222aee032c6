"""Versions of a service (semantic versions) and version constraints (npm-style ranges:
`^1.2`, `~1.4.0`, `>=1.0.0 <2.0.0`, `1.x || 2.x`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import semantic_version
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import Conflict, ValidationFailed
from core.identity.organizations import flush_unique
from core.models.catalog import Service, ServiceVersion
from core.models.pipelines import Pipeline, PipelineRun
from core.pagination import Page, PageRequest, paginate

_SHA = re.compile(r"^[0-9a-f]{7,40}$")


def parse_version(value: str, field: str = "version") -> semantic_version.Version:
    """A semantic version (MAJOR.MINOR.PATCH[-pre][+build]); a leading `v` is accepted."""
    text = value.strip().removeprefix("v")
    try:
        return semantic_version.Version(text)
    except ValueError:
        raise ValidationFailed.on(
            field, f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.4.2)"
        ) from None


def parse_constraint(value: str, field: str = "version_constraint") -> semantic_version.NpmSpec:
    try:
        return semantic_version.NpmSpec(value.strip())
    except (ValueError, AttributeError):  # AttributeError: the library on e.g. `1.0.0 - ^2`
        raise ValidationFailed.on(
            field,
            f"{value!r} is not a semantic version range (e.g. ^1.2.0, ~1.4, >=1.0.0 <2.0.0, 1.x)",
        ) from None


def check_constraint(value: str | None) -> str | None:
    """The constraint normalised for storage (None or empty: any version)."""
    if value is None or not value.strip() or value.strip() == "*":
        return None
    parse_constraint(value)
    return value.strip()


def satisfying(constraint: str | None, versions: Iterable[str]) -> list[str]:
    """The versions (as stored) that satisfy `constraint`, highest first."""
    parsed = sorted((semantic_version.Version(v) for v in versions), reverse=True)
    if constraint is None:
        return [str(v) for v in parsed]
    spec = parse_constraint(constraint)
    return [str(v) for v in parsed if spec.match(v)]


def check_sha(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    sha = value.strip().lower()
    if not _SHA.fullmatch(sha):
        raise ValidationFailed.on(
            "git_sha", f"{value!r} is not a git commit SHA (7 to 40 hex digits)"
        )
    return sha


class VersionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def create(
        self,
        service: Service,
        version: str,
        *,
        git_sha: str | None = None,
        dockerfile_path: str | None = None,
        config: dict[str, Any] | None = None,
        pipeline_run_id: uuid.UUID | None = None,
    ) -> ServiceVersion:
        normalised = str(parse_version(version))
        sha = check_sha(git_sha)
        if pipeline_run_id is not None:
            sha = await self._built_by(service, pipeline_run_id, sha)
        if dockerfile_path is not None and (
            dockerfile_path.startswith("/") or ".." in dockerfile_path.split("/")
        ):
            raise ValidationFailed.on(
                "dockerfile_path", "dockerfile_path must be relative to the repository root"
            )
        conflict = f"{service.name} already has version {normalised}"
        existing = await self.session.scalar(
            select(ServiceVersion.id).where(
                ServiceVersion.service_id == service.id, ServiceVersion.version == normalised
            )
        )
        if existing is not None:
            raise Conflict(conflict, details={"version": normalised, "id": str(existing)})
        row = ServiceVersion(
            service_id=service.id,
            version=normalised,
            git_sha=sha,
            dockerfile_path=dockerfile_path,
            config=config or {},
            pipeline_run_id=pipeline_run_id,
        )
        self.session.add(row)
        await flush_unique(self.session, conflict, {"version": normalised})
        await self.audit.record(
            "service.version.create", "service", service.id, after=snapshot(row)
        )
        return row

    async def _built_by(self, service: Service, run_id: uuid.UUID, sha: str | None) -> str | None:
        """The commit of the run that built the version (its provenance): a succeeded run of
        one of this service's pipelines; a `git_sha` given as well must be that commit."""
        run = await self.session.get(PipelineRun, run_id)
        pipeline = await self.session.get(Pipeline, run.pipeline_id) if run else None
        if run is None or pipeline is None or pipeline.service_id != service.id:
            raise ValidationFailed.on(
                "pipeline_run_id",
                f"pipeline run {run_id} is not a run of {service.name}'s pipelines",
            )
        if run.status != "succeeded":
            raise ValidationFailed.on(
                "pipeline_run_id",
                f"pipeline run {run_id} is {run.status}; only a succeeded run builds a version",
            )
        if sha is not None and not (run.git_sha or "").startswith(sha):
            raise ValidationFailed.on(
                "git_sha",
                f"pipeline run {run_id} built commit {(run.git_sha or 'unknown')[:12]}, not {sha}; "
                "leave git_sha out to take the run's",
            )
        return run.git_sha

    async def versions_of(self, service_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
        """Every registered version of each service, as stored."""
        found: dict[uuid.UUID, list[str]] = {sid: [] for sid in service_ids}
        if service_ids:
            stmt = select(ServiceVersion.service_id, ServiceVersion.version).where(
                ServiceVersion.service_id.in_(service_ids)
            )
            for sid, version in (await self.session.execute(stmt)).all():
                found[sid].append(version)
        return found

    async def list(self, service: Service, page: PageRequest) -> Page[ServiceVersion]:
        """Newest registration first."""
        stmt = select(ServiceVersion).where(ServiceVersion.service_id == service.id)
        return await paginate(
            self.session,
            stmt,
            page,
            order=(ServiceVersion.created_at, ServiceVersion.id),
            descending=True,
        )
