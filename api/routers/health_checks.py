"""Health checks of catalog services and their health. Each check is watched by a durable
HealthMonitorWorkflow (`health-check-<check id>`): creating a check starts it, changing one
reconfigures it, deleting one stops it. Writes need `services:write` on the service's owner
team; reads `services:read`."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import DbSession, State
from api.pagination import PageOut, page_params, page_response
from core.catalog import health as rules
from core.catalog.health import (
    CheckFields,
    CheckHealth,
    HealthCheckService,
    ServiceHealth,
    probe_config,
)
from core.catalog.health_starter import (
    monitor_input,
    monitor_labels,
    reconfigure_monitor,
    start_monitor,
    stop_monitors,
)
from core.catalog.services import authorized_service
from core.db.compensation import before_image, commit_then_call
from core.durations import format_duration, parse_duration
from core.errors import ValidationFailed
from core.models.catalog import HealthCheck
from core.pagination import PageRequest
from core.security.authorization import ANY_SCOPE, Principal
from core.security.egress import EgressPolicy
from workflows.health_monitor import workflow_id_for

router = APIRouter(prefix="/services", tags=["health"])
log = logging.getLogger("idp.api.health")


# Each field's rules, shared by the create and the change bodies (`...`: required).
def _name(default: Any) -> Any:
    return Field(
        default,
        max_length=rules.NAME_MAX_LENGTH,
        description="Unique among the service's checks: lower-case letters, digits and hyphens",
        examples=["readiness"],
    )


def _endpoint(default: Any) -> Any:
    return Field(
        default,
        max_length=rules.MAX_ENDPOINT_LENGTH,
        description="The http(s) URL probed; redirects are not followed. Loopback, "
        "link-local and private addresses are refused unless EGRESS_ALLOWED_CIDRS allows them",
        examples=["https://payments.internal.example.com/healthz"],
    )


def _method(default: Any) -> Any:
    return Field(default, description="GET, HEAD, POST, PUT or OPTIONS", examples=["GET"])


def _expected_status(default: Any) -> Any:
    return Field(
        default,
        ge=rules.MIN_EXPECTED_STATUS,
        le=rules.MAX_EXPECTED_STATUS,
        description="The HTTP status a passing probe answers with",
        examples=[200],
    )


def _interval(default: Any) -> Any:
    return Field(
        default,
        ge=rules.MIN_INTERVAL_SECONDS,
        le=rules.MAX_INTERVAL_SECONDS,
        description=f"Seconds from one probe to the next ({rules.MIN_INTERVAL_SECONDS} to "
        f"{rules.MAX_INTERVAL_SECONDS})",
        examples=[30],
    )


def _timeout(default: Any) -> Any:
    return Field(
        default,
        gt=0,
        description="Seconds a probe may take; less than interval_seconds (default 5, or "
        "half a shorter interval)",
        examples=[5.0],
    )


def _threshold(default: Any) -> Any:
    return Field(
        default,
        ge=1,
        le=rules.MAX_FAILURE_THRESHOLD,
        description="Consecutive failed probes that make the check unhealthy (fewer: degraded)",
        examples=[3],
    )


def _enabled(default: Any) -> Any:
    return Field(default, description="false pauses the check: no probes, status paused")


class HealthCheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = _name(...)
    endpoint: str = _endpoint(...)
    method: str = _method("GET")
    expected_status: int = _expected_status(200)
    interval_seconds: int = _interval(30)
    timeout_seconds: float | None = _timeout(None)  # default: 5, or half a shorter interval
    failure_threshold: int = _threshold(3)
    enabled: bool = _enabled(True)


class HealthCheckPut(BaseModel):
    """Fields to change; omitted fields stay as they are. The result is checked as a whole
    (e.g. a new interval must stay above the timeout)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = _name(None)
    endpoint: str | None = _endpoint(None)
    method: str | None = _method(None)
    expected_status: int | None = _expected_status(None)
    interval_seconds: int | None = _interval(None)
    timeout_seconds: float | None = _timeout(None)
    failure_threshold: int | None = _threshold(None)
    enabled: bool | None = _enabled(None)


class HealthCheckOut(BaseModel):
    id: uuid.UUID
    service_id: uuid.UUID
    name: str = Field(examples=["readiness"])
    endpoint: str = Field(examples=["https://payments.internal.example.com/healthz"])
    method: str = Field(examples=["GET"])
    expected_status: int = Field(examples=[200])
    interval_seconds: int = Field(examples=[30])
    timeout_seconds: float = Field(examples=[5.0])
    failure_threshold: int = Field(examples=[3])
    enabled: bool
    status: str = Field(
        description="unknown, healthy, degraded, unhealthy, or paused (disabled)",
        examples=["healthy"],
    )
    consecutive_failures: int = Field(examples=[0])
    last_checked_at: datetime | None = Field(description="When the last probe ran")
    last_status_code: int | None = Field(description="Its HTTP status (none: no answer)")
    last_latency_ms: float | None = Field(examples=[12.5])
    last_error: str | None = Field(
        description="Why the last probe failed (none when it passed)",
        examples=["expected HTTP 200, got 503"],
    )
    status_changed_at: datetime | None
    workflow_id: str = Field(
        description="The HealthMonitorWorkflow watching the check",
        examples=["health-check-6f1d2c1e-5b0a-4c57-9a43-0b7f3c2d9e11"],
    )
    created_at: datetime
    updated_at: datetime = Field(description="When the configuration last changed")

    @classmethod
    def of(cls, c: HealthCheck) -> HealthCheckOut:
        return cls(
            id=c.id,
            service_id=c.service_id,
            name=c.name,
            endpoint=c.endpoint,
            method=c.method,
            expected_status=c.expected_status,
            interval_seconds=c.interval_seconds,
            timeout_seconds=c.timeout_seconds,
            failure_threshold=c.failure_threshold,
            enabled=c.enabled,
            status=c.status,
            consecutive_failures=c.consecutive_failures,
            last_checked_at=c.last_checked_at,
            last_status_code=c.last_status_code,
            last_latency_ms=c.last_latency_ms,
            last_error=c.last_error,
            status_changed_at=c.status_changed_at,
            workflow_id=workflow_id_for(c.id),
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


class LastResultOut(BaseModel):
    at: datetime
    ok: bool
    status_code: int | None = Field(examples=[200])
    latency_ms: float | None = Field(examples=[12.5])
    error: str | None = Field(examples=[None])


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    from_status: str = Field(examples=["healthy"])
    to_status: str = Field(examples=["degraded"])
    at: datetime
    reason: str | None = Field(examples=["expected HTTP 200, got 503"])


class CheckHealthOut(BaseModel):
    id: uuid.UUID
    name: str = Field(examples=["readiness"])
    enabled: bool
    status: str = Field(examples=["healthy"])
    consecutive_failures: int
    failure_threshold: int
    last_result: LastResultOut | None = Field(description="None until the first probe")
    uptime_percent: float | None = Field(
        description="Share of passed probes in the window, in percent; none without probes",
        examples=[99.826],
    )
    probes_in_window: int = Field(examples=[2880])
    transitions: list[TransitionOut] = Field(description="The last 20, newest first")

    @classmethod
    def of(cls, h: CheckHealth) -> CheckHealthOut:
        c = h.check
        last = h.last_result
        return cls(
            id=c.id,
            name=c.name,
            enabled=c.enabled,
            status=c.status,
            consecutive_failures=c.consecutive_failures,
            failure_threshold=c.failure_threshold,
            last_result=LastResultOut(
                at=last.at,
                ok=last.ok,
                status_code=last.status_code,
                latency_ms=last.latency_ms,
                error=last.error,
            )
            if last
            else None,
            uptime_percent=h.uptime_percent,
            probes_in_window=h.probes_in_window,
            transitions=[TransitionOut.model_validate(t) for t in h.transitions],
        )


class ServiceHealthOut(BaseModel):
    service_id: uuid.UUID
    status: str = Field(
        description="The worst status of the enabled checks (unhealthy > degraded > unknown > "
        "healthy); unknown when there is none",
        examples=["degraded"],
    )
    window: str = Field(description="The uptime window", examples=["24h"])
    checks: list[CheckHealthOut]

    @classmethod
    def of(cls, h: ServiceHealth) -> ServiceHealthOut:
        return cls(
            service_id=h.service_id,
            status=h.status,
            window=format_duration(h.window),
            checks=[CheckHealthOut.of(c) for c in h.checks],
        )


def _fields(body: HealthCheckIn | HealthCheckPut) -> CheckFields:
    return CheckFields(**body.model_dump(exclude_unset=isinstance(body, HealthCheckPut)))


@router.post(
    "/{service_id}/health-checks",
    response_model=HealthCheckOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a health check and start its monitor (services:write on the owner team)",
)
async def create_health_check(
    service_id: uuid.UUID,
    body: HealthCheckIn,
    session: DbSession,
    state: State,
    principal: Principal = require("services:write", ANY_SCOPE),
) -> HealthCheckOut:
    # Before any database work: resolving the endpoint's name holds no transaction open.
    await EgressPolicy.of(state.settings).check_url(body.endpoint, field="endpoint")
    service = await authorized_service(session, service_id, principal, "services:write")
    check = await HealthCheckService(session).create(service, _fields(body))
    labels = (await monitor_labels(session, [check])).get(check.id)

    async def start() -> None:
        await start_monitor(await state.temporal.client(), monitor_input(check, labels=labels))

    # If Temporal cannot start the monitor the check is deleted again (and the answer is a
    # 503), so no check exists without its monitor.
    await commit_then_call(session, start, entity=check, before=None, resource_type="health_check")
    return HealthCheckOut.of(check)


@router.get(
    "/{service_id}/health-checks",
    response_model=PageOut[HealthCheckOut],
    summary="The service's health checks, by name (services:read)",
)
async def list_health_checks(
    service_id: uuid.UUID,
    request: Request,
    session: DbSession,
    principal: Principal = require("services:read", ANY_SCOPE),
    page: PageRequest = Depends(page_params),
) -> PageOut[HealthCheckOut]:
    service = await authorized_service(session, service_id, principal, "services:read")
    found = await HealthCheckService(session).list(service, page)
    return page_response(request, found, HealthCheckOut.of)


@router.get(
    "/{service_id}/health-checks/{check_id}",
    response_model=HealthCheckOut,
    summary="A health check with its current status (services:read)",
)
async def get_health_check(
    service_id: uuid.UUID,
    check_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("services:read", ANY_SCOPE),
) -> HealthCheckOut:
    service = await authorized_service(session, service_id, principal, "services:read")
    return HealthCheckOut.of(await HealthCheckService(session).get(service, check_id))


@router.put(
    "/{service_id}/health-checks/{check_id}",
    response_model=HealthCheckOut,
    summary="Change a health check; its running monitor is reconfigured (services:write)",
)
async def update_health_check(
    service_id: uuid.UUID,
    check_id: uuid.UUID,
    body: HealthCheckPut,
    session: DbSession,
    state: State,
    principal: Principal = require("services:write", ANY_SCOPE),
) -> HealthCheckOut:
    if body.endpoint is not None:
        await EgressPolicy.of(state.settings).check_url(body.endpoint, field="endpoint")
    service = await authorized_service(session, service_id, principal, "services:write")
    checks = HealthCheckService(session)
    check = await checks.get(service, check_id)
    before, config = before_image(check), probe_config(check)
    await checks.update(check, service, _fields(body))
    if probe_config(check) != config:
        labels = (await monitor_labels(session, [check])).get(check.id)

        async def reconfigure() -> None:
            await reconfigure_monitor(await state.temporal.client(), check, labels=labels)

        # A configuration the monitor did not take is set back: the check says what it probes.
        await commit_then_call(
            session, reconfigure, entity=check, before=before, resource_type="health_check"
        )
    return HealthCheckOut.of(check)


@router.delete(
    "/{service_id}/health-checks/{check_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a health check and stop its monitor (services:write); results stay",
)
async def delete_health_check(
    service_id: uuid.UUID,
    check_id: uuid.UUID,
    session: DbSession,
    state: State,
    principal: Principal = require("services:write", ANY_SCOPE),
) -> None:
    service = await authorized_service(session, service_id, principal, "services:write")
    checks = HealthCheckService(session)
    check = await checks.get(service, check_id)
    await checks.delete(check)
    await session.commit()
    await stop_monitors(state.temporal.client, [check.id])


@router.get(
    "/{service_id}/health",
    response_model=ServiceHealthOut,
    summary="The service's health: status, uptime and recent transitions per check (services:read)",
)
async def get_service_health(
    service_id: uuid.UUID,
    session: DbSession,
    principal: Principal = require("services:read", ANY_SCOPE),
    window: str = Query(
        "24h",
        max_length=20,
        description="The uptime window, from 1m to 366d: e.g. 1h, 24h, 7d",
        examples=["24h"],
    ),
) -> ServiceHealthOut:
    service = await authorized_service(session, service_id, principal, "services:read")
    try:
        span = parse_duration(window)
    except ValueError as exc:
        raise ValidationFailed(
            str(exc), details=[{"field": "window", "message": str(exc)}]
        ) from None
    return ServiceHealthOut.of(await HealthCheckService(session).health(service, span))
