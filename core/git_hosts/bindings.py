"""Repositories bound to one organization.

A service's repository is bound to the service's organization when the service is registered
(or its repository changed): through the organization's connection for the repository's host,
whose token must be able to see the repository (checked beforehand through the host's API by
`prove`, outside any transaction). A repository another organization holds is a 409
(`repository_bound_elsewhere`), which names no organization. A binding is released when the
organization's last live service on the repository goes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx
from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService
from core.catalog.repositories import Repository, parse_repository_url
from core.errors import AppError, Conflict, ValidationFailed
from core.git_hosts.connections import GitHostConnectionService, token_of
from core.git_hosts.host_api import check_visible
from core.models.catalog import Service
from core.models.git_hosts import GitHostConnection, RepositoryBinding
from core.settings import Settings


@dataclass(frozen=True)
class Proven:
    """What `prove` found: the repositories whose access a connection's token showed, the
    refusals to give when binding the others, and whether a connection without a token may
    bind at all (not in production: it proves nothing)."""

    keys: frozenset[str] = frozenset()
    refusals: Mapping[str, AppError] = field(default_factory=dict)
    token_required: bool = False


def bound_elsewhere(key: str) -> Conflict:
    return Conflict(
        f"repository {key} is bound to another organization: a repository belongs to one "
        "organization, proven through its Git host connection",
        code="repository_bound_elsewhere",
        details={"repository": key},
    )


async def holder(session: AsyncSession, key: str) -> RepositoryBinding | None:
    """The binding of a repository key (host/path in lower case), if any."""
    return await session.scalar(
        select(RepositoryBinding).where(RepositoryBinding.repository == key)
    )


async def connection_of(
    session: AsyncSession, binding: RepositoryBinding | None
) -> GitHostConnection | None:
    if binding is None or binding.connection_id is None:
        return None
    return await session.get(GitHostConnection, binding.connection_id)


async def prove(
    session: AsyncSession,
    org_id: uuid.UUID,
    urls: Iterable[str | None],
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Proven:
    """Check, through each host's API, that the organization's connection token can see each
    repository it does not hold yet. Ends the session's transaction (commit) before calling
    out, so call it before writing anything. Invalid URLs are left to the service's
    validation; a repository held by another organization, or without a connection, is left to
    `RepositoryBindings.bind`, which refuses it. In production a connection without a token
    cannot bind (`Proven.token_required`)."""
    git_hosts = settings.git_hosts
    wanted: dict[str, Repository] = {}
    for url in urls:
        if not url:
            continue
        try:
            repo = parse_repository_url(url, git_hosts)
        except ValidationFailed:
            continue
        wanted[repo.key] = repo
    checks: list[tuple[Repository, str, str]] = []
    connections = GitHostConnectionService(session, git_hosts=git_hosts)
    for key, repo in wanted.items():
        if await holder(session, key) is not None:
            continue
        connection = await connections.for_host(org_id, repo.host)
        token = token_of(connection) if connection is not None else None
        if connection is not None and token is not None:
            checks.append((repo, token, connection.name))
    await session.commit()  # no transaction stays open across the host's API
    keys: set[str] = set()
    refusals: dict[str, AppError] = {}
    for repo, token, name in checks:
        try:
            await check_visible(
                repo, token, settings.git_host_apis, connection=name, transport=transport
            )
        except AppError as exc:
            refusals[repo.key] = exc
        else:
            keys.add(repo.key)
    return Proven(frozenset(keys), refusals, settings.env == "production")


class RepositoryBindings:
    def __init__(self, session: AsyncSession, proven: Proven | None = None) -> None:
        self.session = session
        self.proven = proven or Proven()
        self.audit = AuditService(session)

    async def bind(self, org_id: uuid.UUID, repo: Repository) -> RepositoryBinding:
        """Bind `repo` to the organization (kept when it holds it already). Raises 409 when
        another organization holds it, 422 without a connection for its host or without proof
        that the connection's token sees it."""
        found = await holder(self.session, repo.key)
        if found is not None:
            if found.org_id != org_id:
                raise bound_elsewhere(repo.key)
            return found
        connection = await GitHostConnectionService(self.session).for_host(org_id, repo.host)
        if connection is None:
            raise ValidationFailed(
                f"the organization has no Git host connection for {repo.host}: add one "
                f"(POST /organizations/{org_id}/git-connections) before using its repositories",
                code="git_connection_required",
                details=[{"field": "repository_url", "message": f"no connection for {repo.host}"}],
            )
        if repo.key in self.proven.refusals:
            raise self.proven.refusals[repo.key]
        if connection.token is None:
            if self.proven.token_required:
                raise ValidationFailed.on(
                    "repository_url",
                    f"connection {connection.name} has no token, so it cannot prove the "
                    f"organization can see {repo.key}; give it a token with read access",
                )
        elif repo.key not in self.proven.keys:
            raise ValidationFailed.on(
                "repository_url",
                f"the access of connection {connection.name} to {repo.key} was not checked",
            )
        binding = RepositoryBinding(
            repository=repo.key, host=repo.host, org_id=org_id, connection_id=connection.id
        )
        try:
            async with self.session.begin_nested():
                self.session.add(binding)
        except IntegrityError:
            raise bound_elsewhere(repo.key) from None  # bound by a concurrent request
        await self.audit.record(
            "repository.bind",
            "repository_binding",
            binding.id,
            after={"repository": repo.key, "org_id": str(org_id), "connection": connection.name},
        )
        return binding

    async def release_unused(self, org_id: uuid.UUID, key: str) -> None:
        """Release the organization's binding of `key` once no live service of it uses it."""
        used = await self.session.scalar(
            select(
                exists().where(
                    Service.org_id == org_id,
                    Service.repository_path == key,
                    Service.deleted_at.is_(None),
                )
            )
        )
        if used:
            return
        released = await self.session.execute(
            delete(RepositoryBinding)
            .where(RepositoryBinding.repository == key, RepositoryBinding.org_id == org_id)
            .returning(RepositoryBinding.id)
        )
        for (binding_id,) in released:
            await self.audit.record(
                "repository.release",
                "repository_binding",
                binding_id,
                before={"repository": key, "org_id": str(org_id)},
            )
