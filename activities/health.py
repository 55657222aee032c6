"""Health activities: probe an HTTP endpoint, record a probe (result row, the check's status
columns, a transition when the status changed) in one transaction, and prune old results.

A failed probe is a result, not an error: `health.probe` raises only for a bug. `health.record`
is idempotent under retries: the result and transition rows take the id the workflow chose."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.catalog.health_messages import (
    Notice,
    ProbeRequest,
    ProbeResult,
    PruneInput,
    PruneResult,
    RecordInput,
    RecordResult,
)
from core.db.engine import transaction
from core.db.types import utcnow
from core.models.catalog import HealthCheck, HealthCheckResult, HealthTransition, Service
from core.notifications.channels import team_channel_ids
from core.security.egress import EgressPolicy, EgressRefused

CHECK_NOT_FOUND = "HealthCheckNotFound"  # the ApplicationError type when the row is missing
MAX_ERROR_LENGTH = 1000
USER_AGENT = "idp-health-probe/1"


def _describe(exc: httpx.HTTPError | EgressRefused, timeout: float) -> str:
    if isinstance(exc, EgressRefused):
        return f"refused by the egress guard: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no response within {timeout:g}s ({type(exc).__name__})"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {detail}"
    return f"{type(exc).__name__}: {detail}"


class HealthActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        platform_url: str = "",
        retention: timedelta = timedelta(days=30),
        egress: EgressPolicy | None = None,
    ) -> None:
        """`egress`: what probes may reach (EGRESS_ALLOWED_CIDRS); the default refuses every
        loopback, link-local and private address."""
        self._sessions = sessions
        self._platform_url = platform_url.rstrip("/")
        self._retention = retention
        self._egress = egress or EgressPolicy()
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        """One client per worker: connections are reused between probes of the same target.
        Redirects are not followed: a check names the URL that must answer. Every connection
        goes to an address the egress guard vetted (users name the endpoints)."""
        if self._http is None:
            self._http = self._egress.client(
                follow_redirects=False, headers={"User-Agent": USER_AGENT}
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @activity.defn(name="health.probe")
    async def probe(self, request: ProbeRequest) -> ProbeResult:
        checked_at = utcnow()
        started = time.perf_counter()
        try:
            # Stream: the status line and headers decide; a large body is never downloaded.
            async with self._client().stream(
                request.method, request.endpoint, timeout=request.timeout_seconds
            ) as response:
                status_code = response.status_code
        except (httpx.HTTPError, EgressRefused) as exc:
            return ProbeResult(
                ok=False,
                checked_at=checked_at,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                error=_describe(exc, request.timeout_seconds)[:MAX_ERROR_LENGTH],
            )
        latency = round((time.perf_counter() - started) * 1000, 3)
        ok = status_code == request.expected_status
        error = None
        if not ok:
            error = f"expected HTTP {request.expected_status}, got {status_code}"
            if 300 <= status_code < 400:
                error += " (redirects are not followed)"
        return ProbeResult(
            ok=ok, checked_at=checked_at, status_code=status_code, latency_ms=latency, error=error
        )

    @activity.defn(name="health.record")
    async def record(self, rec: RecordInput) -> RecordResult:
        async with transaction(self._sessions) as session:
            check = await session.get(HealthCheck, rec.check_id)
            if check is None:
                # Either the API's transaction that created it has not committed yet (retry),
                # or it rolled back (the retries run out and the monitor ends).
                raise ApplicationError(
                    f"health check {rec.check_id} does not exist", type=CHECK_NOT_FOUND
                )
            service = await session.get(Service, check.service_id)
            if check.is_deleted or service is None or service.is_deleted:
                return RecordResult(gone=True)
            changed = rec.status != rec.previous_status
            if not await _already_recorded(session, rec, changed):
                await _write(session, rec, changed, check.service_id)
            if not changed:
                return RecordResult()
            channel_ids = await team_channel_ids(session, service.owner_team_id)
            return RecordResult(
                notice=Notice(
                    service_id=service.id,
                    service=service.name,
                    service_url=f"{self._platform_url}/services/{service.id}",
                    check=check.name,
                    owner_team_id=service.owner_team_id,
                    channel_ids=channel_ids,
                )
            )

    @activity.defn(name="health.prune")
    async def prune(self, request: PruneInput) -> PruneResult:
        """Delete the check's results older than HEALTH_RESULT_RETENTION."""
        cutoff = utcnow() - self._retention
        async with transaction(self._sessions) as session:
            result = await session.execute(
                delete(HealthCheckResult).where(
                    HealthCheckResult.check_id == request.check_id,
                    HealthCheckResult.checked_at < cutoff,
                )
            )
            return PruneResult(deleted=int(getattr(result, "rowcount", 0) or 0))


async def _already_recorded(session: AsyncSession, rec: RecordInput, changed: bool) -> bool:
    """A retry of a record that committed (its rows carry `record_id`)."""
    if rec.result is not None:
        return await session.get(HealthCheckResult, rec.record_id) is not None
    if changed:
        return await session.get(HealthTransition, rec.record_id) is not None
    return False  # a bare status write: writing it again changes nothing


async def _write(
    session: AsyncSession, rec: RecordInput, changed: bool, service_id: uuid.UUID
) -> None:
    check_id = rec.check_id
    now = utcnow()
    values: dict[str, object] = {
        "status": rec.status,
        "consecutive_failures": rec.consecutive_failures,
        # updated_at tells when the configuration changed, not when the monitor last wrote.
        "updated_at": HealthCheck.updated_at,
    }
    result = rec.result
    if result is not None:
        session.add(
            HealthCheckResult(
                id=rec.record_id,
                check_id=check_id,
                checked_at=result.checked_at,
                ok=result.ok,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error,
            )
        )
        values |= {
            "last_checked_at": result.checked_at,
            "last_status_code": result.status_code,
            "last_latency_ms": result.latency_ms,
            "last_error": None if result.ok else (result.error or "failed"),
        }
    at = result.checked_at if result is not None else now
    if changed:
        session.add(
            HealthTransition(
                id=rec.record_id,
                check_id=check_id,
                service_id=service_id,
                from_status=rec.previous_status,
                to_status=rec.status,
                at=at,
                reason=rec.reason,
            )
        )
        values["status_changed_at"] = at
    await session.execute(
        update(HealthCheck)
        .where(HealthCheck.id == check_id)
        .values(values)
        .execution_options(synchronize_session=False)
    )
