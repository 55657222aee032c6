"""Health checks of catalog services: their configuration (created, changed and soft-deleted
here, every change audited), the rules a monitor applies (status from consecutive failures,
which changes are notified), and the read model behind `GET /services/{id}/health`.

Probing is HealthMonitorWorkflow's job (`workflows/health_monitor.py`); it writes the status
columns of `health_checks`, the `health_check_results` rows and the `health_transitions`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.catalog.health_messages import (
    DEGRADED,
    HEALTHY,
    PAUSED,
    UNHEALTHY,
    UNKNOWN,
    ProbeConfig,
)
from core.db.types import utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.identity.organizations import check_slug, flush_unique
from core.models.catalog import HealthCheck, HealthCheckResult, HealthTransition, Service
from core.pagination import Page, PageRequest, paginate

METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")
MIN_INTERVAL_SECONDS = 5
MAX_INTERVAL_SECONDS = 86_400
MIN_EXPECTED_STATUS, MAX_EXPECTED_STATUS = 100, 599
MAX_FAILURE_THRESHOLD = 100
MAX_ENDPOINT_LENGTH = 2048
NAME_MAX_LENGTH = 100
RECENT_TRANSITIONS = 20
DEFAULT_WINDOW = timedelta(hours=24)
MIN_WINDOW, MAX_WINDOW = timedelta(minutes=1), timedelta(days=366)

# How bad a status is, for a service's overall status (the worst of its enabled checks).
SEVERITY = {HEALTHY: 0, UNKNOWN: 1, DEGRADED: 2, UNHEALTHY: 3}

# The configuration columns: what the audit log records (not the status the monitor writes).
CONFIG_COLUMNS = (
    "id",
    "service_id",
    "name",
    "endpoint",
    "method",
    "expected_status",
    "interval_seconds",
    "timeout_seconds",
    "failure_threshold",
    "enabled",
    "deleted_at",
)


# -- the rules (pure; the workflow uses them too) -----------------------------------------------


def derive_status(consecutive_failures: int, failure_threshold: int) -> str:
    """healthy with no failure, degraded below the threshold, unhealthy from it on."""
    if consecutive_failures < 0 or failure_threshold < 1:
        raise ValueError("failures cannot be negative and the threshold is at least 1")
    if consecutive_failures == 0:
        return HEALTHY
    if consecutive_failures < failure_threshold:
        return DEGRADED
    return UNHEALTHY


def worst_status(statuses: Sequence[str]) -> str:
    """A service's status: the worst of its enabled checks' (unknown when it has none)."""
    known = [s for s in statuses if s in SEVERITY]
    return max(known, key=SEVERITY.__getitem__) if known else UNKNOWN


def should_notify(previous: str, status: str) -> bool:
    """Whether a change is worth a `health.changed` message: not a first healthy result, not a
    pause or a resume (a person did that), and not a non-change."""
    if previous == status or status in (UNKNOWN, PAUSED):
        return False
    return not (previous in (UNKNOWN, PAUSED) and status == HEALTHY)


def _problem(field_name: str, message: str) -> dict[str, str]:
    return {"field": field_name, "message": message}


def _endpoint_problem(endpoint: str) -> str | None:
    if len(endpoint) > MAX_ENDPOINT_LENGTH:
        return f"endpoint is longer than {MAX_ENDPOINT_LENGTH} characters"
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        host = None
    if (
        endpoint != endpoint.strip()
        or any(c.isspace() for c in endpoint)
        or parts.scheme not in ("http", "https")
        or not host
    ):
        return f"endpoint {endpoint!r} is not an http(s) URL (e.g. https://api.example.com/healthz)"
    return None


def check_config(config: ProbeConfig, *, min_interval: float = MIN_INTERVAL_SECONDS) -> ProbeConfig:
    """The configuration, with the method in upper case, or ValidationFailed listing every
    problem (`details`: one {field, message} each)."""
    problems: list[dict[str, str]] = []
    method = config.method.upper()
    endpoint_problem = _endpoint_problem(config.endpoint)
    if endpoint_problem:
        problems.append(_problem("endpoint", endpoint_problem))
    if method not in METHODS:
        problems.append(
            _problem("method", f"method must be one of {', '.join(METHODS)}, not {config.method!r}")
        )
    if not MIN_EXPECTED_STATUS <= config.expected_status <= MAX_EXPECTED_STATUS:
        problems.append(
            _problem(
                "expected_status",
                f"expected_status must be an HTTP status from {MIN_EXPECTED_STATUS} to "
                f"{MAX_EXPECTED_STATUS}",
            )
        )
    interval_ok = min_interval <= config.interval_seconds <= MAX_INTERVAL_SECONDS
    if not interval_ok:
        problems.append(
            _problem(
                "interval_seconds",
                f"interval_seconds must be from {min_interval:g} to {MAX_INTERVAL_SECONDS}",
            )
        )
    if config.timeout_seconds <= 0:
        problems.append(_problem("timeout_seconds", "timeout_seconds must be more than 0"))
    elif config.timeout_seconds >= config.interval_seconds:
        problems.append(
            _problem(
                "timeout_seconds",
                f"timeout_seconds ({config.timeout_seconds:g}) must be less than "
                f"interval_seconds ({config.interval_seconds:g})",
            )
        )
    if not 1 <= config.failure_threshold <= MAX_FAILURE_THRESHOLD:
        problems.append(
            _problem(
                "failure_threshold",
                f"failure_threshold must be from 1 to {MAX_FAILURE_THRESHOLD}",
            )
        )
    if problems:
        raise ValidationFailed("; ".join(p["message"] for p in problems), details=problems)
    return config.model_copy(update={"method": method})


def check_window(window: timedelta) -> timedelta:
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        message = "window must be from 1m to 366d (e.g. 1h, 24h, 7d)"
        raise ValidationFailed(message, details=[_problem("window", message)])
    return window


def probe_config(check: HealthCheck) -> ProbeConfig:
    return ProbeConfig(
        endpoint=check.endpoint,
        method=check.method,
        expected_status=check.expected_status,
        interval_seconds=check.interval_seconds,
        timeout_seconds=check.timeout_seconds,
        failure_threshold=check.failure_threshold,
        enabled=check.enabled,
    )


# -- the service ---------------------------------------------------------------------------------


@dataclass
class CheckFields:
    """What a create or an update sets. `None` in an update leaves a field unchanged."""

    name: str | None = None
    endpoint: str | None = None
    method: str | None = None
    expected_status: int | None = None
    interval_seconds: int | None = None
    timeout_seconds: float | None = None
    failure_threshold: int | None = None
    enabled: bool | None = None


DEFAULTS = CheckFields(
    method="GET",
    expected_status=200,
    interval_seconds=30,
    timeout_seconds=5.0,
    failure_threshold=3,
    enabled=True,
)


@dataclass(frozen=True)
class LastResult:
    at: datetime
    ok: bool
    status_code: int | None
    latency_ms: float | None
    error: str | None


@dataclass(frozen=True)
class CheckHealth:
    check: HealthCheck
    last_result: LastResult | None
    uptime_percent: float | None  # None: no probe in the window
    probes_in_window: int
    transitions: list[HealthTransition] = field(default_factory=list)  # newest first


@dataclass(frozen=True)
class ServiceHealth:
    service_id: uuid.UUID
    status: str
    window: timedelta
    checks: list[CheckHealth]


def _snapshot(check: HealthCheck) -> dict[str, Any]:
    full = snapshot(check)
    return {k: full[k] for k in CONFIG_COLUMNS}


def _required(value: Any, field_name: str) -> Any:
    if value is None:
        message = f"{field_name} is required"
        raise ValidationFailed(message, details=[_problem(field_name, message)])
    return value


def _taken(service: Service, name: str) -> str:
    return f"service {service.name} already has a health check named {name}"


class HealthCheckService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, service: Service, check_id: uuid.UUID) -> HealthCheck:
        """A live check of `service` (404 otherwise, also for another service's check)."""
        check = await self.session.get(HealthCheck, check_id)
        if check is None or check.is_deleted or check.service_id != service.id:
            raise NotFound(
                f"health check {check_id} not found for service {service.name}",
                details={"id": str(check_id), "service_id": str(service.id)},
            )
        return check

    async def list(self, service: Service, page: PageRequest) -> Page[HealthCheck]:
        stmt = select(HealthCheck).where(
            HealthCheck.service_id == service.id, HealthCheck.deleted_at.is_(None)
        )
        return await paginate(self.session, stmt, page, order=(HealthCheck.name, HealthCheck.id))

    async def _check_name_free(
        self, service: Service, name: str, own: uuid.UUID | None = None
    ) -> None:
        stmt = select(HealthCheck.id).where(
            HealthCheck.service_id == service.id,
            HealthCheck.name == name,
            HealthCheck.deleted_at.is_(None),
        )
        holder = (await self.session.scalars(stmt)).first()
        if holder is not None and holder != own:
            raise Conflict(_taken(service, name), details={"name": name, "id": str(holder)})

    async def create(self, service: Service, fields: CheckFields) -> HealthCheck:
        name = check_slug(_required(fields.name, "name"), "name", NAME_MAX_LENGTH)
        interval = _pick(fields.interval_seconds, DEFAULTS.interval_seconds)
        # An omitted timeout fits the interval: the default, or half a short interval.
        timeout = _pick(fields.timeout_seconds, min(DEFAULTS.timeout_seconds, interval / 2))
        config = check_config(
            ProbeConfig(
                endpoint=_required(fields.endpoint, "endpoint"),
                method=fields.method or DEFAULTS.method or "GET",
                expected_status=_pick(fields.expected_status, DEFAULTS.expected_status),
                interval_seconds=interval,
                timeout_seconds=timeout,
                failure_threshold=_pick(fields.failure_threshold, DEFAULTS.failure_threshold),
                enabled=_pick(fields.enabled, DEFAULTS.enabled),
            )
        )
        await self._check_name_free(service, name)
        check = HealthCheck(service_id=service.id, name=name)
        _apply(check, config)
        check.status = UNKNOWN if config.enabled else PAUSED
        self.session.add(check)
        await flush_unique(self.session, _taken(service, name), {"name": name})
        await self.audit.record(
            "health_check.create", "health_check", check.id, after=_snapshot(check)
        )
        return check

    async def update(
        self, check: HealthCheck, service: Service, fields: CheckFields
    ) -> HealthCheck:
        """Change the configuration (validated as a whole, e.g. timeout < the new interval)."""
        before = _snapshot(check)
        current = probe_config(check)
        config = check_config(
            ProbeConfig(
                endpoint=_pick(fields.endpoint, current.endpoint),
                method=_pick(fields.method, current.method),
                expected_status=_pick(fields.expected_status, current.expected_status),
                interval_seconds=_pick(fields.interval_seconds, current.interval_seconds),
                timeout_seconds=_pick(fields.timeout_seconds, current.timeout_seconds),
                failure_threshold=_pick(fields.failure_threshold, current.failure_threshold),
                enabled=_pick(fields.enabled, current.enabled),
            )
        )
        if fields.name is not None and fields.name != check.name:
            name = check_slug(fields.name, "name", NAME_MAX_LENGTH)
            await self._check_name_free(service, name, check.id)
            check.name = name
        _apply(check, config)
        await flush_unique(self.session, _taken(service, check.name), {"name": check.name})
        after = _snapshot(check)
        if after != before:
            await self.audit.record(
                "health_check.update", "health_check", check.id, before=before, after=after
            )
        return check

    async def delete(self, check: HealthCheck) -> None:
        """Soft delete: results and transitions stay; the monitor stops."""
        before = _snapshot(check)
        check.soft_delete()
        await self.session.flush()
        await self.audit.record("health_check.delete", "health_check", check.id, before=before)

    async def delete_all(self, service: Service) -> Sequence[uuid.UUID]:
        """Soft-delete every live check of a (deleted) service; their ids, to stop monitors."""
        stmt = select(HealthCheck).where(
            HealthCheck.service_id == service.id, HealthCheck.deleted_at.is_(None)
        )
        checks = list((await self.session.scalars(stmt)).all())
        for check in checks:
            await self.delete(check)
        return tuple(c.id for c in checks)

    async def monitored(self) -> Sequence[HealthCheck]:
        """Every enabled live check of a live service: those that must have a monitor running."""
        stmt = (
            select(HealthCheck)
            .join(Service, Service.id == HealthCheck.service_id)
            .where(
                HealthCheck.deleted_at.is_(None),
                HealthCheck.enabled.is_(True),
                Service.deleted_at.is_(None),
            )
            .order_by(HealthCheck.created_at, HealthCheck.id)
        )
        return list((await self.session.scalars(stmt)).all())

    # -- the read model -------------------------------------------------------------------------

    async def health(
        self, service: Service, window: timedelta = DEFAULT_WINDOW, *, now: datetime | None = None
    ) -> ServiceHealth:
        """Per check: status, last result, uptime over `window`, recent transitions; and the
        service's status, the worst of its enabled checks'."""
        since = (now or utcnow()) - check_window(window)
        checks = list(
            (
                await self.session.scalars(
                    select(HealthCheck)
                    .where(HealthCheck.service_id == service.id, HealthCheck.deleted_at.is_(None))
                    .order_by(HealthCheck.name, HealthCheck.id)
                )
            ).all()
        )
        ids = [c.id for c in checks]
        counts: dict[uuid.UUID, tuple[int, int]] = {}
        if ids:
            rows = await self.session.execute(
                select(
                    HealthCheckResult.check_id,
                    func.count(),
                    func.sum(case((HealthCheckResult.ok.is_(True), 1), else_=0)),
                )
                .where(HealthCheckResult.check_id.in_(ids), HealthCheckResult.checked_at >= since)
                .group_by(HealthCheckResult.check_id)
            )
            counts = {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}
        out = []
        for check in checks:
            total, ok = counts.get(check.id, (0, 0))
            transitions = (
                await self.session.scalars(
                    select(HealthTransition)
                    .where(HealthTransition.check_id == check.id)
                    .order_by(HealthTransition.at.desc(), HealthTransition.id.desc())
                    .limit(RECENT_TRANSITIONS)
                )
            ).all()
            out.append(
                CheckHealth(
                    check=check,
                    last_result=_last_result(check),
                    uptime_percent=round(100.0 * ok / total, 3) if total else None,
                    probes_in_window=total,
                    transitions=list(transitions),
                )
            )
        status = worst_status([c.status for c in checks if c.enabled])
        return ServiceHealth(service_id=service.id, status=status, window=window, checks=out)


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _apply(check: HealthCheck, config: ProbeConfig) -> None:
    check.endpoint = config.endpoint
    check.method = config.method
    check.expected_status = config.expected_status
    check.interval_seconds = int(config.interval_seconds)
    check.timeout_seconds = float(config.timeout_seconds)
    check.failure_threshold = config.failure_threshold
    check.enabled = config.enabled


def _last_result(check: HealthCheck) -> LastResult | None:
    """From the projection the monitor writes with every probe (a failed probe always has an
    error, a passed one never)."""
    if check.last_checked_at is None:
        return None
    return LastResult(
        at=check.last_checked_at,
        ok=check.last_error is None,
        status_code=check.last_status_code,
        latency_ms=check.last_latency_ms,
        error=check.last_error,
    )
