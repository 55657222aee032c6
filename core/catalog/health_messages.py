"""What HealthMonitorWorkflow takes, carries and returns, and what passes between it and its
activities (`activities/health.py`).

The monitor input holds a snapshot of the check's configuration, so a probe never reads the
database first; the database row is the durable copy the API edits, and a change reaches the
running monitor through the `reconfigure` update (or the `configure` signal)."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

# Statuses of a check (and of a service: the worst of its enabled checks).
UNKNOWN = "unknown"  # not probed yet, or just re-enabled
HEALTHY = "healthy"  # the last probe passed
DEGRADED = "degraded"  # 1 .. failure_threshold-1 consecutive failed probes
UNHEALTHY = "unhealthy"  # failure_threshold or more consecutive failed probes
PAUSED = "paused"  # the check is disabled: no probes
STATUSES = (UNKNOWN, HEALTHY, DEGRADED, UNHEALTHY, PAUSED)

DEFAULT_PROBES_PER_RUN = 500  # then continue-as-new, to bound the event history


class ProbeConfig(BaseModel):
    """The configuration of one check, as the monitor uses it."""

    endpoint: str
    method: str = "GET"
    expected_status: int = 200
    interval_seconds: float = 30
    timeout_seconds: float = 5
    failure_threshold: int = 3
    enabled: bool = True


class MonitorState(BaseModel):
    """What the monitor carries from probe to probe, and across continue-as-new."""

    status: str = UNKNOWN
    consecutive_failures: int = 0
    probes: int = 0  # probes recorded over every run of this monitor
    runs: int = 1  # which run of the continue-as-new chain this is
    last_probe_at: datetime | None = None
    since: datetime | None = None  # when `status` was entered, when known


class MonitorLabels(BaseModel):
    """Names a person knows the check by: the start's search attributes and summary, and the
    monitor's current details (its static summary does not survive a continue-as-new)."""

    service: str
    check: str
    team: str | None = None  # slug
    organization: str | None = None  # slug


class MonitorInput(BaseModel):
    check_id: uuid.UUID
    config: ProbeConfig
    labels: MonitorLabels | None = None
    state: MonitorState = Field(default_factory=MonitorState)
    # Continue-as-new after this many probes in one run (or earlier when Temporal suggests it).
    probes_per_run: int = DEFAULT_PROBES_PER_RUN
    # The smallest interval the `reconfigure` validator accepts (the API's rule: 5 s). Tests that
    # start a monitor directly lower it to probe many times a second.
    min_interval_seconds: float = 5
    notifications_queue: str = "notifications"  # where `health.changed` notifications run


class MonitorView(BaseModel):
    """The monitor's live state (query `state`, and the answer to `reconfigure`)."""

    check_id: uuid.UUID
    config: ProbeConfig
    state: MonitorState
    probes_this_run: int
    stopping: bool
    next_probe_at: datetime | None = None


class ProbeRequest(BaseModel):
    check_id: uuid.UUID
    endpoint: str
    method: str
    expected_status: int
    timeout_seconds: float


class ProbeResult(BaseModel):
    """One probe. A failed probe is a result (ok false, with the error), not an exception."""

    ok: bool
    checked_at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class RecordInput(BaseModel):
    """Write one probe (or, without `result`, a status change such as pause) to the database.

    `record_id` is chosen by the workflow (`workflow.uuid4()`): it is the id of the result row
    and of the transition row, so a retried record writes nothing twice."""

    record_id: uuid.UUID
    check_id: uuid.UUID
    result: ProbeResult | None = None
    status: str
    previous_status: str
    consecutive_failures: int
    reason: str | None = None


class Notice(BaseModel):
    """What a `health.changed` notification needs, read in the same transaction."""

    service_id: uuid.UUID
    service: str
    service_url: str
    check: str
    owner_team_id: uuid.UUID
    channel_ids: list[uuid.UUID]  # the owner team's enabled channels


class RecordResult(BaseModel):
    gone: bool = False  # the check (or its service) was deleted: the monitor ends
    notice: Notice | None = None  # set when the status changed


class PruneInput(BaseModel):
    check_id: uuid.UUID


class PruneResult(BaseModel):
    deleted: int


def shown_endpoint(endpoint: str) -> str:
    """The endpoint without credentials, query or fragment (they may carry a token): what a
    summary, a search attribute or a log line may show."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def monitor_summary(monitor: MonitorInput) -> str:
    """`health monitor of shop (readiness: https://shop.example.com/healthz)`."""
    endpoint = shown_endpoint(monitor.config.endpoint)
    labels = monitor.labels
    if labels is None:
        return f"health monitor of {endpoint}"
    return f"health monitor of {labels.service} ({labels.check}: {endpoint})"
