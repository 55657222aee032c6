"""Shared test helpers."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client

from core.models.catalog import Service
from core.security.egress import EgressPolicy
from core.temporal import search_attributes


class TaskPerRequest(httpx.ASGITransport):
    """Each request in a task of its own, as a server runs it: what a request holds (its
    database transactions, core.db.transactions) is then its own, not the test's."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await asyncio.create_task(super().handle_async_request(request))


@asynccontextmanager
async def http_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to `app` in-process, with its lifespan started."""
    async with app.router.lifespan_context(app):
        transport = TaskPerRequest(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def local_egress() -> EgressPolicy:
    """The tests' egress policy: loopback allowed (EGRESS_ALLOWED_CIDRS, tests/conftest.py),
    for activities and senders a test builds itself."""
    return EgressPolicy.parse(os.environ["EGRESS_ALLOWED_CIDRS"])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(
    what: str, probe: Callable[[], Awaitable[bool]], timeout: float = 60, every: float = 0.05
) -> None:
    """Poll `probe` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def seed_service(
    session: AsyncSession, name: str = "app", repository_url: str | None = None
) -> Service:
    """A new organization and team, and a service the team owns (written directly, for tests
    and benchmarks that drive workers without the API); its repository is bound to the
    organization without a Git host connection (development's global tokens and secrets)."""
    from core.catalog.services import ServiceFields, ServiceService
    from core.models.identity import Organization, Team

    org = Organization(name="Org", slug=f"org-{uuid.uuid4().hex[:8]}")
    session.add(org)
    await session.flush()
    team = Team(org_id=org.id, name="Team", slug="team")
    session.add(team)
    await session.flush()
    if repository_url:  # held by the organization as the 0013 migration binds (no connection)
        from core.catalog.repositories import parse_repository_url
        from core.models.git_hosts import RepositoryBinding

        repo = parse_repository_url(repository_url)
        session.add(RepositoryBinding(repository=repo.key, host=repo.host, org_id=org.id))
        await session.flush()
    view = await ServiceService(session).create(
        team, ServiceFields(name=name, repository_url=repository_url)
    )
    return view.service


async def add_git_connection(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    org_id: str,
    host: str = "github.com",
    **body: Any,
) -> dict[str, Any]:
    """A Git host connection of the organization (what binding its repositories needs);
    the answer includes its webhook secret (shown once)."""
    response = await client.post(
        f"/organizations/{org_id}/git-connections",
        json={"name": host.replace(".", "-").replace(":", "-"), "host": host, **body},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def add_search_attributes(client: Client) -> None:
    """The platform's search attributes on a time-skipping test server, which can add them but
    not list them (so `idp temporal setup`'s `register` cannot be used there)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in search_attributes.ALL
            },
        )
    )
