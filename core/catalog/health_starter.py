"""Driving health monitors from outside a workflow (the API, a worker at start-up): start one,
reconfigure it, stop it, and make sure every enabled check has one.

Temporal errors become `core.errors.Unavailable` (503), so an API request that cannot reach
Temporal rolls back and saves nothing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.catalog.health import HealthCheckService, probe_config
from core.catalog.health_messages import (
    STATUSES,
    UNKNOWN,
    MonitorInput,
    MonitorLabels,
    MonitorState,
    ProbeConfig,
    monitor_summary,
)
from core.db.engine import transaction
from core.errors import Unavailable, ValidationFailed
from core.models.catalog import HealthCheck, Service
from core.models.identity import Organization, Team
from core.temporal import search_attributes
from core.temporal.client import temporal_unavailable
from workflows.health_monitor import HEALTH_QUEUE, HealthMonitorWorkflow, workflow_id_for
from workflows.notification import NOTIFICATIONS_QUEUE

log = logging.getLogger("idp.health")

RPC_TIMEOUT = timedelta(seconds=10)
# How long `reconfigure_monitor` waits for a worker to accept the update before it falls back
# to the `configure` signal (which waits in the workflow's history for a worker).
UPDATE_WAIT = timedelta(seconds=5)

Reconfigured = Literal["updated", "signalled", "started"]


def monitor_input(
    check: HealthCheck,
    *,
    labels: MonitorLabels | None = None,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
) -> MonitorInput:
    """The monitor's input from the check's row: its configuration and its last status.
    `labels` (`monitor_labels`) name it in the Temporal UI."""
    status = check.status if check.status in STATUSES else UNKNOWN
    return MonitorInput(
        check_id=check.id,
        config=probe_config(check),
        labels=labels,
        state=MonitorState(
            status=status,
            consecutive_failures=check.consecutive_failures,
            last_probe_at=check.last_checked_at,
            since=check.status_changed_at,
        ),
        notifications_queue=notifications_queue,
    )


async def monitor_labels(
    session: AsyncSession, checks: Sequence[HealthCheck]
) -> dict[uuid.UUID, MonitorLabels]:
    """Each check's labels (service name, team and organization slugs), in one query."""
    service_ids = {c.service_id for c in checks}
    if not service_ids:
        return {}
    rows = await session.execute(
        select(Service.id, Service.name, Team.slug, Organization.slug)
        .join(Team, Team.id == Service.owner_team_id)
        .join(Organization, Organization.id == Service.org_id)
        .where(Service.id.in_(service_ids))
    )
    found = {service_id: (name, team, org) for service_id, name, team, org in rows}
    labels = {}
    for check in checks:
        if check.service_id in found:
            service, team, organization = found[check.service_id]
            labels[check.id] = MonitorLabels(
                service=service, check=check.name, team=team, organization=organization
            )
    return labels


async def _start(
    client: Client, monitor: MonitorInput, task_queue: str, running: WorkflowIDConflictPolicy
) -> None:
    """Start the monitor under its derived id; `running` says what to do if one runs (a
    closed one is always started afresh)."""
    labels = monitor.labels
    await client.start_workflow(
        HealthMonitorWorkflow.run,
        monitor,
        id=workflow_id_for(monitor.check_id),
        task_queue=task_queue,
        id_conflict_policy=running,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        rpc_timeout=RPC_TIMEOUT,
        search_attributes=search_attributes.attributes(
            organization=labels.organization if labels else None,
            team=labels.team if labels else None,
            service=labels.service if labels else None,
            status=monitor.state.status,
        ),
        static_summary=monitor_summary(monitor),
    )


async def start_monitor(
    client: Client, monitor: MonitorInput, *, task_queue: str = HEALTH_QUEUE
) -> str:
    """Start the check's monitor; one already running is kept (its id is derived from the
    check's), a closed one is started afresh. Returns the workflow id."""
    workflow_id = workflow_id_for(monitor.check_id)
    try:
        await _start(client, monitor, task_queue, WorkflowIDConflictPolicy.USE_EXISTING)
    except RPCError as exc:
        raise temporal_unavailable(exc, "start the health monitor") from None
    return workflow_id


async def reconfigure_monitor(
    client: Client,
    check: HealthCheck,
    *,
    labels: MonitorLabels | None = None,
    task_queue: str = HEALTH_QUEUE,
    wait: timedelta = UPDATE_WAIT,
) -> Reconfigured:
    """Give the running monitor the check's configuration through the `reconfigure` update
    ("updated"). No monitor running: start one ("started", with `labels`). No worker
    answering within `wait`: send the `configure` signal instead, applied when a worker picks
    the monitor up ("signalled")."""
    config: ProbeConfig = probe_config(check)
    handle = client.get_workflow_handle(workflow_id_for(check.id))
    try:
        await asyncio.wait_for(
            handle.execute_update(HealthMonitorWorkflow.reconfigure, config, rpc_timeout=wait),
            timeout=wait.total_seconds(),
        )
        return "updated"
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        details = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else []
        raise ValidationFailed(
            f"the monitor refused the configuration: {message}", details=details
        ) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # none running (or never started)
            await start_monitor(client, monitor_input(check, labels=labels), task_queue=task_queue)
            return "started"
        if exc.status != RPCStatusCode.DEADLINE_EXCEEDED:
            raise temporal_unavailable(exc, "reconfigure the health monitor") from None
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        pass  # no worker took the update in time
    try:
        await handle.signal(HealthMonitorWorkflow.configure, config, rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        raise temporal_unavailable(exc, "reconfigure the health monitor") from None
    return "signalled"


async def stop_monitor(client: Client, check_id: uuid.UUID) -> bool:
    """Signal the monitor to end; False when none was running."""
    handle = client.get_workflow_handle(workflow_id_for(check_id))
    try:
        await handle.signal(HealthMonitorWorkflow.stop, rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise temporal_unavailable(exc, "stop the health monitor") from None
    return True


async def stop_monitors(
    connect: Callable[[], Awaitable[Client]], check_ids: Sequence[uuid.UUID]
) -> None:
    """Stop the monitors of deleted checks. When Temporal cannot be reached the deletion still
    stands: each monitor finds its check deleted at its next record and ends by itself."""
    try:
        client = await connect()
        for check_id in check_ids:
            await stop_monitor(client, check_id)
    except Unavailable as exc:
        log.warning("health checks deleted; their monitors were not signalled: %s", exc)


async def ensure_monitors(
    client: Client,
    sessions: async_sessionmaker[AsyncSession],
    *,
    task_queue: str = HEALTH_QUEUE,
    notifications_queue: str = NOTIFICATIONS_QUEUE,
) -> list[str]:
    """Start a monitor for every enabled live check that has none running (created while
    Temporal was down, or whose monitor was terminated). Returns the workflow ids started."""
    async with transaction(sessions) as session:
        checks = await HealthCheckService(session).monitored()
        labels = await monitor_labels(session, checks)
        inputs = [
            monitor_input(c, labels=labels.get(c.id), notifications_queue=notifications_queue)
            for c in checks
        ]
    started = []
    for monitor in inputs:
        workflow_id = workflow_id_for(monitor.check_id)
        try:
            await _start(client, monitor, task_queue, WorkflowIDConflictPolicy.FAIL)
        except WorkflowAlreadyStartedError:
            continue
        started.append(workflow_id)
    if started:
        log.info("started %d health monitor(s) that were not running", len(started))
    return started
