"""Helpers shared by the health monitoring tests: an organization, team and service to attach
checks to, health checks made through the service layer, waiting with a deadline, and
cleaning up the monitors a test started (the Temporal dev server is shared by the session)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select, update
from temporalio.client import Client
from temporalio.service import RPCError

from core.catalog.health import CheckFields, HealthCheckService
from core.db.types import utcnow
from core.models.catalog import HealthCheck, Service
from tests.integration.identity_helpers import Api
from workflows.health_monitor import workflow_id_for

T = TypeVar("T")
Headers = dict[str, str]


@dataclass
class Owner:
    org_id: uuid.UUID
    team_id: uuid.UUID
    service_id: uuid.UUID
    service_name: str


def short(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def make_owner(api: Api, admin: Headers) -> Owner:
    """A new organization and team (through the API) and a service the team owns."""
    org = await api.client.post(
        "/organizations", json={"name": "Org", "slug": short("org")}, headers=admin
    )
    assert org.status_code == 201, org.text
    team = await api.client.post(
        "/teams",
        json={"org_id": org.json()["id"], "name": "Team", "slug": short("team")},
        headers=admin,
    )
    assert team.status_code == 201, team.text
    name = short("svc")
    async with api.session() as session:
        service = Service(
            org_id=uuid.UUID(org.json()["id"]),
            owner_team_id=uuid.UUID(team.json()["id"]),
            name=name,
        )
        session.add(service)
        await session.flush()
        service_id = service.id
    return Owner(
        org_id=uuid.UUID(org.json()["id"]),
        team_id=uuid.UUID(team.json()["id"]),
        service_id=service_id,
        service_name=name,
    )


async def add_check(api: Api, service_id: uuid.UUID, **fields: Any) -> HealthCheck:
    """A check made through HealthCheckService, without starting a monitor."""
    async with api.session() as session:
        service = await session.get(Service, service_id)
        assert service is not None
        fields.setdefault("name", short("check"))
        return await HealthCheckService(session).create(service, CheckFields(**fields))


async def get_check(api: Api, check_id: uuid.UUID) -> HealthCheck:
    [check] = await api.fetch(select(HealthCheck).where(HealthCheck.id == check_id))
    return check


async def until(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool] = bool,
    *,
    timeout: float = 30,
    what: str = "a condition",
) -> T:
    """Poll `probe` until `ok(value)`; fail (not hang) after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = await probe()
    while not ok(value):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {value}")
        await asyncio.sleep(0.1)
        value = await probe()
    return value


async def retire(api: Api, client: Client, check_ids: Iterable[uuid.UUID]) -> None:
    """End the monitors of these checks and soft-delete the checks, so no later test (or
    `ensure_monitors`) finds them."""
    ids = list(check_ids)
    for check_id in ids:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(workflow_id_for(check_id)).terminate("test over")
    if ids:
        await api.run_sql(
            update(HealthCheck)
            .where(HealthCheck.id.in_(ids), HealthCheck.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )
