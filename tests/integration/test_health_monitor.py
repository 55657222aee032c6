"""HealthMonitorWorkflow on a real Temporal dev server and a real database, probing a real HTTP
server on loopback whose answer the test flips, and notifying a team's Slack channel (the
Slack Web API stand-in): healthy -> degraded -> unhealthy -> healthy with the transitions
recorded and `health.changed` delivered; reconfigure and delete through the API; a worker
restart; continue-as-new carrying the state; the start-up reconciliation of missing monitors;
and the probe and record activities on their own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.health import HealthActivities
from activities.notifications import NotificationActivities
from core.catalog.health_messages import (
    MonitorInput,
    MonitorLabels,
    MonitorState,
    MonitorView,
    ProbeRequest,
    RecordInput,
)
from core.catalog.health_starter import (
    ensure_monitors,
    monitor_input,
    monitor_labels,
    start_monitor,
    stop_monitor,
)
from core.db.engine import create_engine, session_factory
from core.db.types import utcnow
from core.models.audit import AuditLog
from core.models.catalog import HealthCheck, HealthCheckResult, HealthTransition
from core.models.notifications import Notification
from core.notifications.dispatch import SenderSettings
from core.settings import Settings
from core.temporal import policies, search_attributes
from core.temporal.client import connect
from core.temporal.converter import data_converter
from core.topology import Topology
from tests.helpers import local_egress
from tests.integration.health_helpers import (
    Owner,
    add_check,
    get_check,
    make_owner,
    retire,
    until,
)
from tests.integration.identity_helpers import Api, assert_error, running_api
from tests.integration.operator_view import activity_summaries, current_details, executions, upserts
from tests.standins.http_target import HttpTarget
from tests.standins.slack_api import SlackApiStandin
from workers.runner import sandbox_runner
from workflows.health_monitor import HEALTH_QUEUE, HealthMonitorWorkflow, workflow_id_for
from workflows.notification import NotificationWorkflow

TOKEN = "xoxb-health-test-0123456789"
FAST = {"interval_seconds": 0.3, "timeout_seconds": 0.25}
HISTORIES = Path(__file__).parent.parent / "fixtures" / "histories"


@pytest.fixture(autouse=True)
def _topology(topology: Topology) -> Iterator[None]:
    policies.install(topology)
    yield


@pytest.fixture
def target() -> Iterator[HttpTarget]:
    with HttpTarget() as running:
        yield running


@pytest.fixture
def slack() -> Iterator[SlackApiStandin]:
    with SlackApiStandin(tokens={TOKEN}, channels={"C0HEALTH": "health"}) as running:
        yield running


@asynccontextmanager
async def workers(
    client: Client,
    settings: Settings,
    queue: str,
    *,
    notifications_queue: str | None = None,
    slack_url: str | None = None,
) -> AsyncIterator[HealthActivities]:
    """A worker on `queue` with the health monitor (and one for notifications if asked)."""
    engine = create_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    health = HealthActivities(sessions, platform_url="http://idp.test", egress=local_egress())
    notify = NotificationActivities(
        sessions,
        SenderSettings(slack_api_url=slack_url, egress=local_egress()),
        platform_url="http://idp.test",
    )
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=queue,
                    workflows=[HealthMonitorWorkflow],
                    activities=[health.probe, health.record, health.prune],
                    workflow_runner=sandbox_runner(),
                )
            )
            if notifications_queue is not None:
                await stack.enter_async_context(
                    Worker(
                        client,
                        task_queue=notifications_queue,
                        workflows=[NotificationWorkflow],
                        activities=[notify.prepare, notify.deliver, notify.mark_failed],
                        workflow_runner=sandbox_runner(),
                    )
                )
            yield health
    finally:
        await health.close()
        await engine.dispose()


def fast_input(
    check: HealthCheck, labels: MonitorLabels | None = None, **changes: object
) -> MonitorInput:
    """The monitor's input from the row, probing a few times a second."""
    base = monitor_input(check, labels=labels)
    config = base.config.model_copy(update=FAST)
    return base.model_copy(update={"config": config, "min_interval_seconds": 0.1, **changes})


async def status_of(api: Api, check_id: uuid.UUID) -> str:
    return (await get_check(api, check_id)).status


async def result_count(api: Api, check_id: uuid.UUID) -> int:
    [count] = await api.fetch(
        select(func.count())
        .select_from(HealthCheckResult)
        .where(HealthCheckResult.check_id == check_id)
    )
    return int(count)


async def transitions(api: Api, check_id: uuid.UUID) -> list[tuple[str, str]]:
    rows = await api.fetch(
        select(HealthTransition)
        .where(HealthTransition.check_id == check_id)
        .order_by(HealthTransition.at, HealthTransition.id)
    )
    return [(t.from_status, t.to_status) for t in rows]


async def view(handle: WorkflowHandle[Any, Any]) -> MonitorView:
    return await handle.query(HealthMonitorWorkflow.state, result_type=MonitorView)


def idp_team(execution: WorkflowExecution) -> str | None:
    return execution.typed_search_attributes.get(search_attributes.TEAM)


async def test_healthy_degraded_unhealthy_healthy_with_transitions_and_slack_messages(
    api: Api,
    temporal_env: WorkflowEnvironment,
    target: HttpTarget,
    slack: SlackApiStandin,
) -> None:
    queue, nqueue = f"health-{uuid.uuid4().hex[:8]}", f"notify-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    _, admin = await api.token("admin")
    owner = await make_owner(api, admin)
    channel = await api.client.post(
        "/notifications/channels",
        json={
            "type": "slack",
            "name": f"health-{uuid.uuid4().hex[:6]}",
            "team_id": str(owner.team_id),
            "config": {"channel": "#health", "team_id": "T0TEAM"},
            "secrets": {"bot_token": TOKEN},
        },
        headers=admin,
    )
    assert channel.status_code == 201, channel.text
    check = await add_check(api, owner.service_id, name="readiness", endpoint=target.url)
    async with api.session() as session:
        labels = (await monitor_labels(session, [check]))[check.id]
    assert (labels.service, labels.check) == (owner.service_name, "readiness")
    assert labels.team and labels.organization
    monitor = fast_input(check, notifications_queue=nqueue, labels=labels)
    try:
        async with workers(
            client, api.settings, queue, notifications_queue=nqueue, slack_url=slack.base_url
        ):
            workflow_id = await start_monitor(client, monitor, task_queue=queue)
            assert workflow_id == f"health-check-{check.id}"
            handle = client.get_workflow_handle(workflow_id, result_type=MonitorState)
            await until(lambda: status_of(api, check.id), lambda s: s == "healthy", what="healthy")

            target.status = 503
            await until(
                lambda: status_of(api, check.id), lambda s: s == "unhealthy", what="unhealthy"
            )
            failing = await view(handle)
            assert failing.state.consecutive_failures >= 3
            # The operator finds the unhealthy service by its attributes, and reads why.
            [found] = await executions(
                client,
                f"WorkflowId = '{workflow_id}' AND IdpStatus = 'unhealthy' "
                f"AND IdpService = '{owner.service_name}' AND IdpTeam = '{labels.team}' "
                f"AND IdpOrganization = '{labels.organization}'",
            )
            assert found.status == WorkflowExecutionStatus.RUNNING  # the service's news
            details = await current_details(handle)
            assert details.startswith("unhealthy since "), details
            assert "last probe HTTP 503 in " in details
            assert "expected HTTP 200, got 503" in details

            target.status = 200
            await until(lambda: status_of(api, check.id), lambda s: s == "healthy", what="healed")
            await executions(client, f"WorkflowId = '{workflow_id}' AND IdpStatus = 'healthy'")
            assert (await current_details(handle)).startswith("healthy since ")
            posted = await until(
                lambda: asyncio.sleep(0, slack.calls("chat.postMessage")),
                lambda calls: len(calls) >= 3,
                what="three Slack messages",
            )
            healed = await view(handle)

            assert await stop_monitor(client, check.id)
            final = await asyncio.wait_for(handle.result(), timeout=30)
            history = await handle.fetch_history()
    finally:
        await retire(api, client, [check.id])

    assert await transitions(api, check.id) == [
        ("unknown", "healthy"),
        ("healthy", "degraded"),
        ("degraded", "unhealthy"),
        ("unhealthy", "healthy"),
    ]
    # The first healthy result is not news; every change after it is, exactly once.
    name = owner.service_name
    assert sorted(r.text or "" for r in posted) == sorted(
        [f"{name} is degraded", f"{name} is unhealthy", f"{name} is healthy"]
    )
    assert all(r.ok and r.channel == "#health" and r.token == TOKEN for r in posted)
    unhealthy = next(r for r in posted if r.text == f"{name} is unhealthy")
    blocks = str(unhealthy.blocks)
    assert "expected HTTP 200, got 503" in blocks and "readiness" in blocks
    assert "*Previous status*\\ndegraded" in blocks
    assert f"http://idp.test/services/{owner.service_id}" in blocks
    rows = await api.fetch(
        select(Notification).where(Notification.reference == f"health-check:{check.id}")
    )
    assert len(rows) == 3 and {r.status for r in rows} == {"delivered"}
    assert {r.event for r in rows} == {"health.changed"}
    # Its notifications carry the monitor's attributes: found by the service's name.
    sent = await executions(
        client,
        f"WorkflowType = 'NotificationWorkflow' AND IdpService = '{name}' "
        "AND IdpStatus = 'delivered'",
        at_least=3,
    )
    assert len(sent) == 3 and {idp_team(e) for e in sent} == {labels.team}

    # The UI's list and timeline read as sentences; history grows by one upsert per change
    # of status, not per probe.
    assert await (await handle.describe()).static_summary() == (
        f"health monitor of {name} (readiness: {target.url})"
    )
    summaries = await activity_summaries(client, handle)
    assert summaries[:2] == [f"probe GET {target.url}", "record healthy (was unknown)"]
    assert "record unhealthy (was degraded)" in summaries
    assert summaries.count(f"probe GET {target.url}") >= final.probes  # + one cut off by stop
    assert await upserts(handle) == 4 < final.probes

    stored = await get_check(api, check.id)
    assert stored.consecutive_failures == 0 and stored.last_status_code == 200
    assert stored.last_error is None and stored.status_changed_at is not None
    results = await api.fetch(
        select(HealthCheckResult).where(HealthCheckResult.check_id == check.id)
    )
    assert sum(1 for r in results if not r.ok) >= 3
    assert all(r.error == "expected HTTP 200, got 503" for r in results if not r.ok)
    assert len(results) == final.probes >= healed.state.probes
    assert healed.state.status == "healthy" and healed.config.interval_seconds == 0.3
    assert final.status == "healthy"

    # The workflow code replays its own history: it is deterministic.
    await Replayer(
        workflows=[HealthMonitorWorkflow],
        data_converter=data_converter(),
        workflow_runner=sandbox_runner(),
    ).replay_workflow(history)


async def test_a_monitor_recorded_before_the_status_attribute_still_replays() -> None:
    """Recorded by the code from before `IdpStatus` (unknown -> healthy -> degraded ->
    unhealthy, then stopped): it replays without upserting anything."""
    history = WorkflowHistory.from_json(
        "old", (HISTORIES / "health_monitor_before_status_attribute.json").read_text()
    )
    assert history.events[-1].HasField("workflow_execution_completed_event_attributes")
    await Replayer(
        workflows=[HealthMonitorWorkflow],
        data_converter=data_converter(),
        workflow_runner=sandbox_runner(),
    ).replay_workflow(history)


async def test_reconfigure_by_put_pause_and_delete_through_the_api(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    target: HttpTarget,
) -> None:
    address = temporal_env.client.service_client.config.target_host
    with_temporal = settings.model_copy(update={"temporal_address": address})
    async with running_api(with_temporal, topology, database_url) as api:
        client = await connect(api.settings, topology)  # the API's codec: encrypted payloads
        _, admin = await api.token("admin")
        owner = await make_owner(api, admin)  # a team without channels: nothing to notify
        base = f"/services/{owner.service_id}/health-checks"
        created = await api.client.post(
            base,
            json={
                "name": "live",
                "endpoint": target.url,
                "interval_seconds": 5,
                "timeout_seconds": 2,
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        check_id = uuid.UUID(created.json()["id"])
        url = f"{base}/{check_id}"
        handle = client.get_workflow_handle(created.json()["workflow_id"], result_type=MonitorState)
        # Started by the API: named after its service, found by it.
        assert await (await handle.describe()).static_summary() == (
            f"health monitor of {owner.service_name} (live: {target.url})"
        )
        [found] = await executions(
            client,
            f"WorkflowId = '{handle.id}' AND IdpService = '{owner.service_name}' "
            "AND IdpStatus = 'unknown'",
        )
        assert found.typed_search_attributes.get(search_attributes.ORGANIZATION)
        assert found.typed_search_attributes.get(search_attributes.TEAM)
        try:
            async with workers(client, api.settings, HEALTH_QUEUE):
                await until(lambda: status_of(api, check_id), lambda s: s == "healthy")

                # A new expected status reaches the running monitor, which probes at once.
                changed = await api.client.put(url, json={"expected_status": 204}, headers=admin)
                assert changed.status_code == 200, changed.text
                assert (await view(handle)).config.expected_status == 204
                await until(lambda: status_of(api, check_id), lambda s: s == "degraded")
                shown = await api.client.get(url, headers=admin)
                assert shown.json()["last_error"] == "expected HTTP 204, got 200"

                # Refused changes change nothing, in the database or in the monitor.
                too_slow = await api.client.put(url, json={"timeout_seconds": 6}, headers=admin)
                assert assert_error(too_slow, 422, "validation_error")["details"][0]["field"] == (
                    "timeout_seconds"
                )
                assert (await get_check(api, check_id)).timeout_seconds == 2
                assert (await view(handle)).config.timeout_seconds == 2

                paused = await api.client.put(url, json={"enabled": False}, headers=admin)
                assert paused.status_code == 200
                await until(lambda: status_of(api, check_id), lambda s: s == "paused")
                probes = await result_count(api, check_id)
                await asyncio.sleep(0.5)
                assert await result_count(api, check_id) == probes  # no probe while paused

                assert (await api.client.delete(url, headers=admin)).status_code == 204
                final = await asyncio.wait_for(handle.result(), 30)
                assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        finally:
            await retire(api, client, [check_id])
        assert final.status == "paused"
        assert_error(await api.client.get(url, headers=admin), 404, "not_found")
        assert await transitions(api, check_id) == [
            ("unknown", "healthy"),
            ("healthy", "degraded"),
            ("degraded", "paused"),
        ]
        actions = await api.fetch(
            select(AuditLog.action)
            .where(AuditLog.resource_id == str(check_id))
            .order_by(AuditLog.occurred_at, AuditLog.id)
        )
        assert actions == [
            "health_check.create",
            "health_check.update",
            "health_check.update",
            "health_check.delete",
        ]


async def test_deleting_the_service_deletes_its_checks_and_stops_their_monitors(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    target: HttpTarget,
) -> None:
    address = temporal_env.client.service_client.config.target_host
    with_temporal = settings.model_copy(update={"temporal_address": address})
    async with running_api(with_temporal, topology, database_url) as api:
        client = await connect(api.settings, topology)
        _, admin = await api.token("admin")
        owner = await make_owner(api, admin)
        base = f"/services/{owner.service_id}/health-checks"
        ids, handles = [], []
        for name in ("live", "ready"):
            created = await api.client.post(
                base,
                json={"name": name, "endpoint": target.url, "interval_seconds": 5},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            ids.append(uuid.UUID(created.json()["id"]))
            handles.append(client.get_workflow_handle(created.json()["workflow_id"]))
        try:
            async with workers(client, api.settings, HEALTH_QUEUE):
                deleted = await api.client.delete(f"/services/{owner.service_id}", headers=admin)
                assert deleted.status_code == 204, deleted.text
                for handle in handles:
                    await asyncio.wait_for(handle.result(), 30)
                    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        finally:
            await retire(api, client, ids)
        for check_id in ids:
            assert (await get_check(api, check_id)).deleted_at is not None
        deletes = await api.fetch(
            select(AuditLog.resource_id).where(
                AuditLog.action == "health_check.delete",
                AuditLog.resource_id.in_([str(i) for i in ids]),
            )
        )
        assert sorted(deletes) == sorted(str(i) for i in ids)


async def test_the_monitor_survives_a_worker_restart(
    api: Api, temporal_env: WorkflowEnvironment, target: HttpTarget
) -> None:
    queue = f"health-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    _, admin = await api.token("admin")
    owner = await make_owner(api, admin)
    check = await add_check(api, owner.service_id, endpoint=target.url)
    try:
        async with workers(client, api.settings, queue):
            await start_monitor(client, fast_input(check), task_queue=queue)
            await until(lambda: result_count(api, check.id), lambda n: n >= 2)
        handle = client.get_workflow_handle(workflow_id_for(check.id))
        run_id = (await handle.describe()).run_id
        before = await result_count(api, check.id)
        hits = len(target.hits)
        await asyncio.sleep(1)  # no worker: no probe
        assert len(target.hits) <= hits + 1  # at most the probe in flight at the shutdown

        async with workers(client, api.settings, queue):  # a new worker process's worth
            await until(lambda: result_count(api, check.id), lambda n: n >= before + 3)
            # The workflow's own count: a probe cut off by the shutdown may have stored a row
            # that the workflow never heard of, so it is waited for on its own.
            state = await until(lambda: view(handle), lambda v: v.state.probes >= before + 2)
    finally:
        await retire(api, client, [check.id])
    assert (await handle.describe()).run_id == run_id  # the same run carried on
    assert state.state.status == "healthy" and state.state.probes >= before + 2


async def test_continue_as_new_carries_state_and_prunes_old_results(
    api: Api, temporal_env: WorkflowEnvironment, target: HttpTarget
) -> None:
    queue = f"health-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    _, admin = await api.token("admin")
    owner = await make_owner(api, admin)
    check = await add_check(api, owner.service_id, endpoint=target.url, failure_threshold=5)
    old_id = uuid.uuid4()
    async with api.session() as session:  # a result from before the retention (30 days)
        session.add(
            HealthCheckResult(
                id=old_id, check_id=check.id, ok=True, checked_at=utcnow() - timedelta(days=40)
            )
        )
    target.status = 500
    try:
        async with workers(client, api.settings, queue):
            await start_monitor(client, fast_input(check, probes_per_run=3), task_queue=queue)
            handle = client.get_workflow_handle(workflow_id_for(check.id))
            first_run = (await handle.describe()).run_id
            state = await until(
                lambda: view(handle),
                lambda v: v.state.runs >= 3 and v.state.consecutive_failures >= 7,
                what="three runs",
            )
            latest_run = (await handle.describe()).run_id
            # The status attribute is carried across continue-as-new: a run that starts
            # unhealthy and stays so upserts nothing.
            running = await executions(
                client,
                f"WorkflowId = '{workflow_id_for(check.id)}' AND IdpStatus = 'unhealthy' "
                "AND ExecutionStatus = 'Running'",
            )
            assert len(running) == 1
            assert await upserts(client.get_workflow_handle(handle.id, run_id=latest_run)) == 0
    finally:
        await retire(api, client, [check.id])
    assert latest_run != first_run
    assert state.probes_this_run <= 3  # each run stops at probes_per_run...
    # ...but the count of failures goes on across runs, so the threshold (5 > 3) is reached.
    assert state.state.status == "unhealthy" and state.state.probes >= 7
    assert await transitions(api, check.id) == [("unknown", "degraded"), ("degraded", "unhealthy")]
    assert await api.fetch(select(HealthCheckResult).where(HealthCheckResult.id == old_id)) == []
    assert await result_count(api, check.id) >= 7


async def test_ensure_monitors_starts_the_missing_ones_once(
    api: Api, temporal_env: WorkflowEnvironment, target: HttpTarget
) -> None:
    queue = f"health-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    _, admin = await api.token("admin")
    owner = await make_owner(api, admin)
    # Created while Temporal was down, say: rows without a monitor.
    check = await add_check(api, owner.service_id, endpoint=target.url)
    disabled = await add_check(api, owner.service_id, endpoint=target.url, enabled=False)
    engine = create_engine(api.settings.effective_database_url)
    started: list[str] = []
    try:
        started = await ensure_monitors(client, session_factory(engine), task_queue=queue)
        assert workflow_id_for(check.id) in started
        assert workflow_id_for(disabled.id) not in started
        again = await ensure_monitors(client, session_factory(engine), task_queue=queue)
        assert workflow_id_for(check.id) not in again  # already running: left alone
        async with workers(client, api.settings, queue):
            await until(lambda: status_of(api, check.id), lambda s: s == "healthy")
    finally:
        await engine.dispose()
        for workflow_id in started:  # monitors of other tests' leftover checks, if any
            await retire(api, client, [uuid.UUID(workflow_id.removeprefix("health-check-"))])
        await retire(api, client, [check.id, disabled.id])


# -- the activities on their own -----------------------------------------------------------------


@pytest.fixture
async def activities(api: Api) -> AsyncIterator[HealthActivities]:
    engine = create_engine(api.settings.effective_database_url)
    acts = HealthActivities(
        session_factory(engine), platform_url="http://idp.test", egress=local_egress()
    )
    yield acts
    await acts.close()
    await engine.dispose()


def probe_of(url: str, **changes: object) -> ProbeRequest:
    base = {
        "check_id": uuid.uuid4(),
        "endpoint": url,
        "method": "GET",
        "expected_status": 200,
        "timeout_seconds": 1.0,
    }
    return ProbeRequest.model_validate({**base, **changes})


async def test_probe_results_never_raise(activities: HealthActivities, target: HttpTarget) -> None:
    passed = await activities.probe(probe_of(target.url, method="HEAD"))
    assert passed.ok and passed.status_code == 200 and passed.error is None
    assert passed.latency_ms is not None and passed.latency_ms >= 0
    assert target.hits[-1] == ("HEAD", "/healthz")

    target.status = 302
    target.headers = {"Location": "/elsewhere"}
    moved = await activities.probe(probe_of(target.url))
    assert not moved.ok and moved.status_code == 302
    assert moved.error == "expected HTTP 200, got 302 (redirects are not followed)"
    assert target.hits[-1] == ("GET", "/healthz")  # the redirect was not followed

    target.status, target.headers = 204, {}
    assert (await activities.probe(probe_of(target.url, expected_status=204))).ok

    target.delay = 1.0
    slow = await activities.probe(probe_of(target.url, timeout_seconds=0.2))
    assert not slow.ok and slow.status_code is None
    assert (slow.error or "").startswith("no response within 0.2s")
    target.delay = 0

    target.stop()
    refused = await activities.probe(probe_of(target.url))
    assert not refused.ok and (refused.error or "").startswith("cannot connect")


async def test_record_is_idempotent_and_reports_changes(
    api: Api, activities: HealthActivities, target: HttpTarget
) -> None:
    _, admin = await api.token("admin")
    owner: Owner = await make_owner(api, admin)
    check = await add_check(api, owner.service_id, endpoint=target.url)
    result = await activities.probe(probe_of(target.url, expected_status=201))
    record = RecordInput(
        record_id=uuid.uuid4(),
        check_id=check.id,
        result=result,
        status="degraded",
        previous_status="unknown",
        consecutive_failures=1,
        reason=result.error,
    )
    first = await activities.record(record)
    retried = await activities.record(record)  # as a retry after a lost reply would
    assert first == retried and not first.gone
    assert first.notice is not None and first.notice.check == check.name
    assert first.notice.service == owner.service_name and first.notice.channel_ids == []
    assert await result_count(api, check.id) == 1
    assert await transitions(api, check.id) == [("unknown", "degraded")]
    stored = await get_check(api, check.id)
    assert stored.status == "degraded" and stored.consecutive_failures == 1
    assert (
        stored.last_error == "expected HTTP 201, got 200" and stored.updated_at == check.updated_at
    )

    same = await activities.record(
        record.model_copy(update={"record_id": uuid.uuid4(), "previous_status": "degraded"})
    )
    assert same.notice is None and await result_count(api, check.id) == 2

    async with api.session() as session:
        row = await session.get(HealthCheck, check.id)
        assert row is not None
        row.soft_delete()
    gone = await activities.record(record.model_copy(update={"record_id": uuid.uuid4()}))
    assert gone.gone and await result_count(api, check.id) == 2
