"""HealthMonitorWorkflow: one per health check (workflow id `health-check-<check id>`), on the
`health` task queue, for as long as the check exists.

Each cycle: probe the endpoint (`health.probe`), derive the status from the consecutive
failures (healthy / degraded / unhealthy, `core.catalog.health.derive_status`), record it
(`health.record`: result row, status columns, transition), send `health.changed` through a
child NotificationWorkflow when the change is worth it, then sleep until the next probe is
due. A `reconfigure` update or a `configure` signal wakes it (and it probes at once with the new
configuration); the `stop` signal ends it. A disabled check is *paused*: no probes, status
`paused`, until it is enabled again. After `probes_per_run` probes (or when Temporal suggests
it) it prunes old results and continues as new, carrying its state.

`IdpStatus` is the check's status, upserted only when it changes (a probe that confirms it
adds nothing to history); the current details say how long it has held and what the last
probe saw. A service found unhealthy is the service's news, not a failure of the monitor."""

from __future__ import annotations

import contextlib
import itertools
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.health import CHECK_NOT_FOUND, HealthActivities
    from core.catalog.health import check_config, derive_status, should_notify
    from core.catalog.health_messages import (
        PAUSED,
        UNKNOWN,
        MonitorInput,
        MonitorState,
        MonitorView,
        ProbeConfig,
        ProbeRequest,
        ProbeResult,
        PruneInput,
        RecordInput,
        RecordResult,
        shown_endpoint,
    )
    from core.errors import ValidationFailed
    from core.notifications.messages import NotificationRequest
    from core.temporal import search_attributes
    from core.temporal.policies import activity_options
    from workflows.notification import notify

WORKFLOW_ID_PREFIX = "health-check-"
HEALTH_QUEUE = "health"
PROBE_MARGIN = timedelta(seconds=5)  # on top of the check's timeout, for the activity itself


def workflow_id_for(check_id: object) -> str:
    return f"{WORKFLOW_ID_PREFIX}{check_id}"


def _duration(delta: timedelta) -> str:
    """`2d 3h`, `2h 5m`, `4m 10s`, `12s`: how long a status has held, in two units at most."""
    seconds = max(int(delta.total_seconds()), 0)
    units = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
    for (name, size), (next_name, next_size) in itertools.pairwise(units):
        if seconds >= size:
            rest = seconds % size // next_size
            return f"{seconds // size}{name}" + (f" {rest}{next_name}" if rest else "")
    return f"{seconds}s"


@workflow.defn
class HealthMonitorWorkflow:
    @workflow.init
    def __init__(self, input: MonitorInput) -> None:
        # Set before any update or signal handler can run (they may arrive with the start).
        self._input = input
        self._config = input.config
        self._state: MonitorState = input.state.model_copy()
        self._probes_this_run = 0
        self._stopping = False
        self._woken = False  # a configuration change arrived while sleeping
        self._next_probe_at: datetime | None = None
        self._last: ProbeResult | None = None

    # -- the loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: MonitorInput) -> MonitorState:
        if workflow.info().typed_search_attributes.get(search_attributes.STATUS) is None:
            search_attributes.set_status(self._state.status)  # started without it
        self._show()
        while not self._stopping:
            if not self._config.enabled:
                if not await self._paused():
                    break
                continue
            self._woken = False
            started = workflow.now()
            if await self._probe_and_record():
                break  # the check is gone
            if self._stopping:
                break
            if (
                self._probes_this_run >= input.probes_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await self._continue_as_new()
            await self._sleep_until(started + timedelta(seconds=self._config.interval_seconds))
        self._next_probe_at = None
        return self._state

    async def _probe_and_record(self) -> bool:
        """One cycle; True when the check no longer exists."""
        config = self._config
        try:
            result: ProbeResult = await workflow.execute_activity_method(
                HealthActivities.probe,
                ProbeRequest(
                    check_id=self._input.check_id,
                    endpoint=config.endpoint,
                    method=config.method,
                    expected_status=config.expected_status,
                    timeout_seconds=config.timeout_seconds,
                ),
                summary=f"probe {config.method} {shown_endpoint(config.endpoint)}",
                **activity_options(
                    "health_probe",
                    start_to_close_timeout=timedelta(seconds=config.timeout_seconds) + PROBE_MARGIN,
                ),
            )
        except ActivityError as err:
            # The probe did not run (its worker was lost, or a bug): that says nothing about
            # the service, so it is not counted. The next cycle probes again.
            workflow.logger.warning("health probe could not run: %s", err.cause or err)
            return False
        if self._stopping:
            return False
        previous = self._state.status
        failures = 0 if result.ok else self._state.consecutive_failures + 1
        status = derive_status(failures, self._config.failure_threshold)
        recorded = await self._record(
            RecordInput(
                record_id=workflow.uuid4(),
                check_id=self._input.check_id,
                result=result,
                status=status,
                previous_status=previous,
                consecutive_failures=failures,
                reason=result.error or f"probe passed (HTTP {result.status_code})",
            )
        )
        if recorded is None:
            return False  # not written: not counted either
        if recorded.gone:
            return True
        self._last = result
        self._enter(status, result.checked_at)
        self._state = self._state.model_copy(
            update={
                "consecutive_failures": failures,
                "probes": self._state.probes + 1,
                "last_probe_at": result.checked_at,
            }
        )
        self._probes_this_run += 1
        self._show()
        notice = recorded.notice
        if notice is not None and notice.channel_ids and should_notify(previous, status):
            await notify(
                NotificationRequest(
                    request_id=workflow.uuid4(),
                    event="health.changed",
                    context={
                        "service": notice.service,
                        "status": status,
                        "previous_status": previous,
                        "check": notice.check,
                        "last_error": result.error,
                        "service_url": notice.service_url,
                    },
                    channel_ids=notice.channel_ids,
                    team_id=notice.owner_team_id,
                    reference=f"health-check:{self._input.check_id}",
                ),
                task_queue=self._input.notifications_queue,
            )
        return False

    async def _record(self, rec: RecordInput) -> RecordResult | None:
        """Write `rec`; a missing check row means gone, a database that stays down means the
        write is dropped (None) and monitoring goes on."""
        changed = "" if rec.status == rec.previous_status else f" (was {rec.previous_status})"
        try:
            return await workflow.execute_activity_method(
                HealthActivities.record,
                rec,
                summary=f"record {rec.status}{changed}",
                **activity_options("db"),
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == CHECK_NOT_FOUND:
                return RecordResult(gone=True)
            workflow.logger.warning("health record could not be written: %s", cause or err)
            return None

    async def _set_status(self, status: str, reason: str) -> bool:
        """Record a status change without a probe (pause, resume); False when gone."""
        previous = self._state.status
        if previous == status:
            return True
        recorded = await self._record(
            RecordInput(
                record_id=workflow.uuid4(),
                check_id=self._input.check_id,
                status=status,
                previous_status=previous,
                consecutive_failures=0,
                reason=reason,
            )
        )
        if recorded is not None and recorded.gone:
            return False
        self._enter(status, workflow.now())
        self._state = self._state.model_copy(update={"consecutive_failures": 0})
        self._show()
        return True

    def _enter(self, status: str, at: datetime) -> None:
        """The state's status becomes `status`; on a change, `IdpStatus` follows (the only
        upsert: probes that confirm the status add nothing to history)."""
        if status == self._state.status:
            return
        self._state = self._state.model_copy(update={"status": status, "since": at})
        search_attributes.set_status(status)

    def _show(self) -> None:
        """The current details (not a command: free to refresh on every probe)."""
        state, lines = self._state, []
        held = state.status
        if state.since is not None:
            since = state.since.astimezone(UTC) if state.since.tzinfo else state.since
            since = since.replace(tzinfo=UTC)  # a naive time from a caller is UTC
            held += f" since {since:%Y-%m-%d %H:%M:%S} UTC ({_duration(workflow.now() - since)})"
        if state.consecutive_failures:
            held += f", {state.consecutive_failures} failed probe(s) in a row"
        lines.append(held)
        last = self._last
        if last is not None:
            answer = f"HTTP {last.status_code}" if last.status_code is not None else "no answer"
            took = f" in {last.latency_ms:.0f} ms" if last.latency_ms is not None else ""
            lines.append(
                f"last probe {answer}{took} at {last.checked_at:%H:%M:%S} UTC"
                + (f": {last.error}" if last.error else "")
            )
        if self._next_probe_at is not None:
            lines.append(f"next probe at {self._next_probe_at:%H:%M:%S} UTC")
        labels = self._input.labels
        endpoint = f"{self._config.method} {shown_endpoint(self._config.endpoint)}"
        lines.append(f"{labels.service}: {endpoint}" if labels else endpoint)
        workflow.set_current_details("\n".join(lines))

    async def _paused(self) -> bool:
        """While the check is disabled: status `paused`, no probes, wait for enable or stop.
        False when the monitor must end."""
        if not await self._set_status(PAUSED, "check disabled"):
            return False
        self._next_probe_at = None
        await workflow.wait_condition(
            lambda: (
                self._stopping
                or self._config.enabled
                or workflow.info().is_continue_as_new_suggested()
            )
        )
        if self._stopping:
            return False
        if not self._config.enabled:  # only history grew: start afresh, still paused
            await self._continue_as_new()
        return await self._set_status(UNKNOWN, "check enabled")

    async def _sleep_until(self, due: datetime) -> None:
        self._next_probe_at = due
        self._show()
        remaining = (due - workflow.now()).total_seconds()
        if remaining <= 0 or self._woken:
            return
        with contextlib.suppress(TimeoutError):  # the normal end of a sleep
            await workflow.wait_condition(lambda: self._stopping or self._woken, timeout=remaining)

    async def _continue_as_new(self) -> None:
        try:
            await workflow.execute_activity_method(
                HealthActivities.prune,
                PruneInput(check_id=self._input.check_id),
                summary="prune old results",
                **activity_options("db"),
            )
        except ActivityError as err:  # the next run prunes again
            workflow.logger.warning("pruning old health results failed: %s", err.cause or err)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            self._input.model_copy(
                update={
                    "config": self._config,
                    "state": self._state.model_copy(update={"runs": self._state.runs + 1}),
                }
            )
        )

    # -- messages ---------------------------------------------------------------------------

    def _apply(self, config: ProbeConfig) -> None:
        self._config = config
        self._woken = True

    def _checked(self, config: ProbeConfig) -> ProbeConfig:
        try:
            return check_config(config, min_interval=self._input.min_interval_seconds)
        except ValidationFailed as exc:
            raise ApplicationError(
                exc.message, exc.details, type="ValidationFailed", non_retryable=True
            ) from None

    @workflow.update
    async def reconfigure(self, config: ProbeConfig) -> MonitorView:
        """Replace the configuration; the monitor probes at once with it."""
        self._apply(self._checked(config))
        return self.state()

    @reconfigure.validator
    def _validate_reconfigure(self, config: ProbeConfig) -> None:
        self._checked(config)

    @workflow.signal
    def configure(self, config: ProbeConfig) -> None:
        """Like `reconfigure`, for a caller that cannot wait for a worker; an invalid
        configuration is logged and ignored."""
        try:
            self._apply(self._checked(config))
        except ApplicationError as exc:
            workflow.logger.warning("ignored an invalid configuration: %s", exc.message)

    @workflow.signal
    def stop(self) -> None:
        """End the monitor (the check was deleted)."""
        self._stopping = True

    @workflow.query
    def state(self) -> MonitorView:
        return MonitorView(
            check_id=self._input.check_id,
            config=self._config,
            state=self._state,
            probes_this_run=self._probes_this_run,
            stopping=self._stopping,
            next_probe_at=self._next_probe_at,
        )
