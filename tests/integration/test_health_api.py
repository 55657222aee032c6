"""The health check API on a real database and a real Temporal dev server (no worker: these
tests look at what the API saves, starts, refuses and reads): validation in the one error
shape with nothing saved, who may do what, the audit trail, the `GET /services/{id}/health`
read model with its uptime arithmetic, and a Temporal outage refusing a create."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from core.db.types import utcnow
from core.models.audit import AuditLog
from core.models.catalog import HealthCheck, HealthCheckResult, HealthTransition
from core.settings import Settings
from core.temporal.client import connect
from core.topology import Topology
from tests.helpers import free_port
from tests.integration.health_helpers import Headers, Owner, add_check, make_owner, retire
from tests.integration.identity_helpers import Api, assert_error, running_api

ENDPOINT = f"http://127.0.0.1:{free_port()}/healthz"  # nothing listens: never probed anyway


@dataclass
class Env:
    api: Api
    client: Client  # the API's own (encrypting) client
    admin: Headers
    owner: Owner
    created: list[uuid.UUID]

    @property
    def base(self) -> str:
        return f"/services/{self.owner.service_id}/health-checks"

    async def create(self, headers: Headers | None = None, **body: Any) -> Any:
        body = {"name": f"c-{uuid.uuid4().hex[:8]}", "endpoint": ENDPOINT, **body}
        response = await self.api.client.post(self.base, json=body, headers=headers or self.admin)
        if response.status_code == 201:
            self.created.append(uuid.UUID(response.json()["id"]))
        return response


@pytest.fixture
async def env(
    settings: Settings, topology: Topology, database_url: str, temporal_env: WorkflowEnvironment
) -> AsyncIterator[Env]:
    address = temporal_env.client.service_client.config.target_host
    with_temporal = settings.model_copy(update={"temporal_address": address})
    async with running_api(with_temporal, topology, database_url) as api:
        client = await connect(api.settings, topology)
        _, admin = await api.token("admin")
        env = Env(api, client, admin, await make_owner(api, admin), [])
        try:
            yield env
        finally:  # no monitor of these checks may outlive the test
            await retire(api, client, env.created)


async def check_count(api: Api, service_id: uuid.UUID) -> int:
    [count] = await api.fetch(
        select(func.count()).select_from(HealthCheck).where(HealthCheck.service_id == service_id)
    )
    return int(count)


async def test_create_starts_the_monitor_and_bad_input_saves_nothing(env: Env) -> None:
    api = env.api
    bad_bodies: list[tuple[dict[str, Any], str]] = [
        ({"endpoint": "ftp://example.com/health"}, "endpoint"),
        ({"endpoint": "not a url"}, "endpoint"),
        ({"method": "DELETE"}, "method"),
        ({"expected_status": 99}, "expected_status"),
        ({"expected_status": 600}, "expected_status"),
        ({"interval_seconds": 4}, "interval_seconds"),
        ({"interval_seconds": 86_401}, "interval_seconds"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"interval_seconds": 10, "timeout_seconds": 10}, "timeout_seconds"),
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 101}, "failure_threshold"),
        ({"name": "Not A Slug"}, "name"),
        ({"colour": "red"}, "colour"),
    ]
    for body, field in bad_bodies:
        error = assert_error(await env.create(**body), 422, "validation_error")
        assert field in error["details"][0]["field"], (body, error)
    missing = await api.client.post(env.base, json={"name": "x"}, headers=env.admin)
    assert "endpoint" in assert_error(missing, 422)["details"][0]["field"]
    assert await check_count(api, env.owner.service_id) == 0

    created = await env.create(name="readiness", method="head", interval_seconds=60)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["method"] == "HEAD" and body["status"] == "unknown"
    assert body["interval_seconds"] == 60 and body["timeout_seconds"] == 5.0
    assert body["failure_threshold"] == 3 and body["expected_status"] == 200
    assert body["workflow_id"] == f"health-check-{body['id']}"
    described = await env.client.get_workflow_handle(body["workflow_id"]).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert described.task_queue == "health"

    duplicate = await env.create(name="readiness")
    assert assert_error(duplicate, 409, "conflict")["details"]["name"] == "readiness"
    assert await check_count(api, env.owner.service_id) == 1
    unknown_service = await api.client.post(
        f"/services/{uuid.uuid4()}/health-checks",
        json={"name": "x", "endpoint": ENDPOINT},
        headers=env.admin,
    )
    assert_error(unknown_service, 404, "not_found")

    listed = await api.client.get(f"{env.base}?limit=1", headers=env.admin)
    assert [c["name"] for c in listed.json()["items"]] == ["readiness"]
    one = await api.client.get(f"{env.base}/{body['id']}", headers=env.admin)
    assert one.status_code == 200 and one.json()["endpoint"] == ENDPOINT
    other = await make_owner(api, env.admin)  # a check is reached through its own service
    assert_error(
        await api.client.get(
            f"/services/{other.service_id}/health-checks/{body['id']}", headers=env.admin
        ),
        404,
    )


async def test_who_may_read_and_write(env: Env) -> None:
    api = env.api
    created = await env.create(name="owned")
    assert created.status_code == 201
    check_url = f"{env.base}/{created.json()['id']}"

    _, viewer = await api.token("viewer")  # services:read everywhere, no write
    denied = await env.create(viewer, name="by-viewer")
    assert assert_error(denied, 403, "forbidden")["details"] == {"permission": "services:write"}
    assert_error(await api.client.put(check_url, json={"enabled": False}, headers=viewer), 403)
    assert_error(await api.client.delete(check_url, headers=viewer), 403)
    assert (await api.client.get(env.base, headers=viewer)).status_code == 200
    assert (await api.client.get(check_url, headers=viewer)).status_code == 200
    health = await api.client.get(f"/services/{env.owner.service_id}/health", headers=viewer)
    assert health.status_code == 200

    # A developer of the owner team may write; one of another team may not even read.
    member_id, member_email = await api.user()
    added = await api.client.post(
        f"/teams/{env.owner.team_id}/members",
        json={"user_id": str(member_id), "role": "member"},
        headers=env.admin,
    )
    assert added.status_code == 201, added.text
    member = {"Authorization": f"Bearer {(await api.login(member_email))['access_token']}"}
    assert (await env.create(member, name="by-member")).status_code == 201

    stranger_team = await make_owner(api, env.admin)
    stranger_id, stranger_email = await api.user()
    await api.client.post(
        f"/teams/{stranger_team.team_id}/members",
        json={"user_id": str(stranger_id), "role": "owner"},
        headers=env.admin,
    )
    stranger = {"Authorization": f"Bearer {(await api.login(stranger_email))['access_token']}"}
    assert_error(await env.create(stranger, name="by-stranger"), 403)
    assert_error(await api.client.get(check_url, headers=stranger), 403)
    assert_error(await api.client.get(env.base), 401)
    assert await check_count(api, env.owner.service_id) == 2


async def test_changes_are_audited_and_checked_as_a_whole(env: Env) -> None:
    api = env.api
    created = await env.create(name="audited", interval_seconds=30, timeout_seconds=5)
    check_id = created.json()["id"]
    url = f"{env.base}/{check_id}"

    too_short = await api.client.put(url, json={"interval_seconds": 5}, headers=env.admin)
    error = assert_error(too_short, 422, "validation_error")  # the timeout (5) is not below 5
    assert error["details"][0]["field"] == "timeout_seconds"
    second = await env.create(name="second")
    clash = await api.client.put(
        f"{env.base}/{second.json()['id']}", json={"name": "audited"}, headers=env.admin
    )
    assert_error(clash, 409, "conflict")

    changed = await api.client.put(
        url, json={"name": "renamed", "interval_seconds": 60}, headers=env.admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "renamed" and changed.json()["timeout_seconds"] == 5.0
    # No worker runs in these tests, so no one could accept the `reconfigure` update: the new
    # configuration went as the `configure` signal, kept in the monitor's history.
    history = await env.client.get_workflow_handle(changed.json()["workflow_id"]).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == ["configure"]
    assert (await api.client.delete(url, headers=env.admin)).status_code == 204
    assert_error(await api.client.get(url, headers=env.admin), 404)
    assert_error(await api.client.delete(url, headers=env.admin), 404)
    # The name is free again once the check is deleted.
    assert (await env.create(name="renamed")).status_code == 201

    entries = await api.fetch(
        select(AuditLog)
        .where(AuditLog.resource_type == "health_check", AuditLog.resource_id == check_id)
        .order_by(AuditLog.occurred_at, AuditLog.id)
    )
    assert [e.action for e in entries] == [
        "health_check.create",
        "health_check.update",
        "health_check.delete",
    ]
    create, change, delete = entries
    assert create.after["endpoint"] == ENDPOINT and create.before is None
    assert create.actor_id is not None and create.request_id
    assert change.before["name"] == "audited" and change.after["name"] == "renamed"
    assert change.before["interval_seconds"] == 30 and change.after["interval_seconds"] == 60
    assert "status" not in change.after  # the monitor's columns are not configuration
    assert delete.before["name"] == "renamed" and delete.after is None


async def test_service_health_read_model_and_uptime(env: Env) -> None:
    api = env.api
    now = utcnow()
    # Checks made without monitors; the rows the monitors would write are written here.
    web = await add_check(api, env.owner.service_id, name="web", endpoint=ENDPOINT)
    db = await add_check(api, env.owner.service_id, name="db", endpoint=ENDPOINT)
    off = await add_check(api, env.owner.service_id, name="off", endpoint=ENDPOINT, enabled=False)
    fresh = await add_check(api, env.owner.service_id, name="fresh", endpoint=ENDPOINT)
    env.created += [web.id, db.id, off.id, fresh.id]
    async with api.session() as session:
        recent = [True, True, True, False]  # in the last 24 hours: 75 %
        older = [False, False]  # 2 and 3 days ago: in a 7-day window (3 of 6: 50 %)
        for i, ok in enumerate(recent):
            session.add(
                HealthCheckResult(check_id=web.id, ok=ok, checked_at=now - timedelta(hours=i + 1))
            )
        for i, ok in enumerate(older):
            session.add(
                HealthCheckResult(check_id=web.id, ok=ok, checked_at=now - timedelta(days=i + 2))
            )
        session.add(HealthCheckResult(check_id=db.id, ok=True, checked_at=now))
        for i in range(25):
            session.add(
                HealthTransition(
                    check_id=web.id,
                    service_id=env.owner.service_id,
                    from_status="healthy" if i % 2 else "degraded",
                    to_status="degraded" if i % 2 else "healthy",
                    at=now - timedelta(minutes=100 - i),
                    reason=f"change {i}",
                )
            )
    await api.run_sql(
        update(HealthCheck)
        .where(HealthCheck.id == web.id)
        .values(
            status="degraded",
            consecutive_failures=1,
            last_checked_at=now - timedelta(hours=1),
            last_status_code=503,
            last_latency_ms=12.5,
            last_error="expected HTTP 200, got 503",
        )
    )
    await api.run_sql(
        update(HealthCheck)
        .where(HealthCheck.id == db.id)
        .values(status="healthy", last_checked_at=now, last_status_code=200, last_latency_ms=3.0)
    )
    await api.run_sql(update(HealthCheck).where(HealthCheck.id == off.id).values(status="paused"))
    await api.run_sql(update(HealthCheck).where(HealthCheck.id == fresh.id).values(enabled=True))

    url = f"/services/{env.owner.service_id}/health"
    response = await api.client.get(url, headers=env.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["service_id"] == str(env.owner.service_id) and body["window"] == "1d"
    # Worst of the enabled checks: web degraded beats db healthy and fresh unknown; the
    # disabled (paused) check does not count.
    assert body["status"] == "degraded"
    checks = {c["name"]: c for c in body["checks"]}
    assert list(checks) == ["db", "fresh", "off", "web"]
    assert checks["web"]["uptime_percent"] == 75.0 and checks["web"]["probes_in_window"] == 4
    assert checks["web"]["last_result"] == {
        "at": checks["web"]["last_result"]["at"],
        "ok": False,
        "status_code": 503,
        "latency_ms": 12.5,
        "error": "expected HTTP 200, got 503",
    }
    transitions = checks["web"]["transitions"]
    assert len(transitions) == 20
    assert [t["reason"] for t in transitions[:2]] == ["change 24", "change 23"]  # newest first
    assert checks["db"]["uptime_percent"] == 100.0 and checks["db"]["last_result"]["ok"] is True
    assert checks["fresh"]["uptime_percent"] is None and checks["fresh"]["last_result"] is None
    assert checks["fresh"]["status"] == "unknown" and checks["fresh"]["transitions"] == []
    assert checks["off"]["status"] == "paused" and checks["off"]["enabled"] is False

    week = (await api.client.get(f"{url}?window=7d", headers=env.admin)).json()
    web_week = next(c for c in week["checks"] if c["name"] == "web")
    assert week["window"] == "7d" and web_week["uptime_percent"] == 50.0
    assert web_week["probes_in_window"] == 6
    hour = (await api.client.get(f"{url}?window=90m", headers=env.admin)).json()
    assert next(c for c in hour["checks"] if c["name"] == "web")["probes_in_window"] == 1

    for bad in ("soon", "0s", "30s", "400d"):
        error = assert_error(await api.client.get(f"{url}?window={bad}", headers=env.admin), 422)
        assert error["details"][0]["field"] == "window"

    # The worst status wins: an unhealthy check makes the service unhealthy.
    await api.run_sql(update(HealthCheck).where(HealthCheck.id == db.id).values(status="unhealthy"))
    assert (await api.client.get(url, headers=env.admin)).json()["status"] == "unhealthy"
    empty = await make_owner(api, env.admin)
    nothing = await api.client.get(f"/services/{empty.service_id}/health", headers=env.admin)
    assert nothing.json() == {
        "service_id": str(empty.service_id),
        "status": "unknown",
        "window": "1d",
        "checks": [],
    }


async def test_without_temporal_a_create_saves_nothing_and_a_delete_still_deletes(
    settings: Settings, topology: Topology, database_url: str
) -> None:
    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with running_api(down, topology, database_url) as api:
        _, admin = await api.token("admin")
        owner = await make_owner(api, admin)
        base = f"/services/{owner.service_id}/health-checks"
        audited = (
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "health_check.create")
        )
        [audits_before] = await api.fetch(audited)
        refused = await api.client.post(
            base, json={"name": "orphan", "endpoint": ENDPOINT}, headers=admin
        )
        assert "Temporal" in assert_error(refused, 503, "unavailable")["message"]
        [live] = await api.fetch(
            select(func.count())
            .select_from(HealthCheck)
            .where(HealthCheck.service_id == owner.service_id, HealthCheck.deleted_at.is_(None))
        )
        assert live == 0
        # It was saved before Temporal was asked (no transaction waits on the network), then
        # reverted: the audit log says both, and why.
        assert await api.fetch(audited) == [audits_before + 1]
        [revert] = await api.fetch(
            select(AuditLog)
            .where(AuditLog.action == "health_check.revert")
            .order_by(AuditLog.occurred_at.desc())
            .limit(1)
        )
        assert revert.before["name"] == "orphan" and revert.before["deleted_at"] is None
        assert revert.after["deleted_at"] is not None and "Temporal" in revert.after["reason"]
        # Validation still comes first, with its own answer.
        assert_error(
            await api.client.post(base, json={"name": "x", "endpoint": "nope"}, headers=admin),
            422,
        )

        check = await add_check(api, owner.service_id, endpoint=ENDPOINT)
        url = f"{base}/{check.id}"
        assert (await api.client.delete(url, headers=admin)).status_code == 204
        assert_error(await api.client.get(url, headers=admin), 404)
        # A change of configuration must reach the monitor: without Temporal it is refused.
        other = await add_check(api, owner.service_id, endpoint=ENDPOINT)
        refused_put = await api.client.put(
            f"{base}/{other.id}", json={"interval_seconds": 60}, headers=admin
        )
        assert_error(refused_put, 503, "unavailable")
        [stored] = await api.fetch(select(HealthCheck).where(HealthCheck.id == other.id))
        assert stored.interval_seconds == 30  # set back
        [revert] = await api.fetch(
            select(AuditLog).where(
                AuditLog.action == "health_check.revert", AuditLog.resource_id == str(other.id)
            )
        )
        assert (revert.before["interval_seconds"], revert.after["interval_seconds"]) == (60, 30)
