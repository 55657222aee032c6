"""NotificationWorkflow end to end on a real Temporal dev server and a real database, against
real local servers: a stand-in Slack Web API, an aiosmtpd SMTP server and a webhook receiver
that checks signatures with the documented algorithm."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.notifications import NotificationActivities
from core.db.engine import create_engine, session_factory
from core.models.audit import AuditLog
from core.models.notifications import Notification, NotificationAttempt
from core.notifications.dispatch import SenderSettings
from core.notifications.messages import (
    MessageUpdate,
    NotificationRequest,
    NotificationSummary,
    channel_label,
)
from core.notifications.starter import start_notification
from core.settings import Settings
from core.temporal import policies, search_attributes
from core.temporal.client import connect
from core.temporal.converter import data_converter
from core.topology import Topology
from tests.helpers import local_egress
from tests.integration.identity_helpers import Api, assert_error, running_api
from tests.integration.operator_view import activity_summaries, executions
from tests.standins.slack_api import SlackApiStandin
from tests.standins.smtp import SmtpStandin
from tests.standins.webhook_receiver import WebhookReceiver
from workers.runner import sandbox_runner
from workflows.notification import (
    DELIVERY_FAILED,
    MESSAGE_UPDATE_FAILED,
    NOTIFICATIONS_QUEUE,
    RECORD_FAILED,
    NotificationWorkflow,
    SlackMessageUpdateWorkflow,
)

TOKEN = "xoxb-delivery-test-0123456789"
SIGNING_SECRET = "whsec_delivery_test_secret_0123456789"
SLACK_USER = "U0DEVUSER1"
MAX_ATTEMPTS = 4
HISTORIES = Path(__file__).parent.parent / "fixtures" / "histories"


def fast(topology: Topology, initial: timedelta = timedelta(milliseconds=200)) -> Topology:
    """temporal.yaml's policies with quick retries, so a test waits seconds, not minutes."""
    kind = topology.activities["notification_delivery"]
    retry = kind.retry.model_copy(
        update={
            "initial_interval": initial,
            "maximum_interval": max(initial, timedelta(seconds=1)),
            "maximum_attempts": MAX_ATTEMPTS,
        }
    )
    activities = {
        **topology.activities,
        "notification_delivery": kind.model_copy(update={"retry": retry}),
    }
    return topology.model_copy(update={"activities": activities})


@dataclass
class Remotes:
    slack: SlackApiStandin
    smtp: SmtpStandin
    hooks: WebhookReceiver


@pytest.fixture
def remotes() -> Iterator[Remotes]:
    with (
        SlackApiStandin(tokens={TOKEN}, channels={"C0DEPLOYS": "deploys", SLACK_USER: "dm"}) as s,
        SmtpStandin() as m,
        WebhookReceiver(secret=SIGNING_SECRET) as w,
    ):
        yield Remotes(s, m, w)


@pytest.fixture(autouse=True)
def _quick_retries(topology: Topology) -> Iterator[None]:
    policies.install(fast(topology))
    yield
    policies.install(topology)


@asynccontextmanager
async def worker(
    env: WorkflowEnvironment, api: Api, remotes: Remotes, queue: str
) -> AsyncIterator[Worker]:
    engine = create_engine(api.settings.effective_database_url)
    acts = NotificationActivities(
        session_factory(engine),
        SenderSettings(slack_api_url=remotes.slack.base_url, egress=local_egress()),
        platform_url="http://idp.test",
    )
    try:
        async with Worker(
            env.client if isinstance(env, WorkflowEnvironment) else env,
            task_queue=queue,
            workflows=[NotificationWorkflow, SlackMessageUpdateWorkflow],
            activities=[acts.prepare, acts.deliver, acts.mark_failed, acts.update_message],
            workflow_runner=sandbox_runner(),
        ) as running:
            yield running
    finally:
        await engine.dispose()


async def channel(
    api: Api, headers: dict[str, str], kind: str, remotes: Remotes, **config: Any
) -> str:
    bodies: dict[str, dict[str, Any]] = {
        "slack": {
            "config": {"channel": "#deploys", "team_id": "T0TEAM"},
            "secrets": {"bot_token": TOKEN},
        },
        "email": {
            "config": {
                "host": "127.0.0.1",
                "port": remotes.smtp.port,
                "security": "none",
                "from_address": "idp@example.com",
                "to": ["ops@example.com"],
            }
        },
        "webhook": {
            "config": {"url": remotes.hooks.url},
            "secrets": {"signing_secret": SIGNING_SECRET},
        },
    }
    body = {"type": kind, "name": f"{kind}-{uuid.uuid4().hex[:6]}", **bodies[kind]}
    body["config"] = {**body["config"], **config}
    created = await api.client.post("/notifications/channels", json=body, headers=headers)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def send(client: Client, queue: str, request: NotificationRequest) -> NotificationSummary:
    workflow_id = await start_notification(client, request, task_queue=queue)
    handle = client.get_workflow_handle(workflow_id, result_type=NotificationSummary)
    return await asyncio.wait_for(handle.result(), timeout=120)  # a hang fails, not blocks


async def send_failing(
    client: Client, queue: str, request: NotificationRequest
) -> tuple[NotificationSummary, ApplicationError]:
    """Send a request a delivery of which fails: the workflow must end failed (DeliveryFailed),
    its summary in the error's details."""
    with pytest.raises(WorkflowFailureError) as caught:
        await send(client, queue, request)
    error = caught.value.cause
    assert isinstance(error, ApplicationError) and error.type == DELIVERY_FAILED, error
    assert error.non_retryable
    return NotificationSummary.model_validate(error.details[0]), error


async def records(api: Api, request: NotificationRequest) -> list[Notification]:
    return await api.fetch(
        select(Notification)
        .where(Notification.request_id == request.request_id)
        .order_by(Notification.channel_type, Notification.recipient)
    )


async def attempts(api: Api, notification_id: uuid.UUID) -> list[NotificationAttempt]:
    return await api.fetch(
        select(NotificationAttempt)
        .where(NotificationAttempt.notification_id == notification_id)
        .order_by(NotificationAttempt.attempt)
    )


CONTEXT = {
    "pipeline": "api-build",
    "service": "payments",
    "run_id": "run-42",
    "run_url": "http://idp.test/runs/42",
    "ref": "main",
    "sha": "0123abcd",
    "triggered_by": "alice",
    "duration_seconds": 93,
    "failed_stage": "test",
    "failed_step": "pytest",
    "error": "2 tests failed <script>",
}


async def test_delivers_over_every_channel_type_and_records_it(
    api: Api, temporal_env: WorkflowEnvironment, remotes: Remotes
) -> None:
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    _, admin = await api.token("admin")
    user_id, user_email = await api.user("viewer")
    _, as_user = (
        user_id,
        {"Authorization": f"Bearer {(await api.login(user_email))['access_token']}"},
    )
    prefs = {
        "preferences": [
            {"channel_type": "slack", "event": "*", "settings": {"slack_user_id": SLACK_USER}}
        ]
    }
    assert (
        await api.client.put("/users/me/notification-preferences", json=prefs, headers=as_user)
    ).status_code == 200
    ids = [await channel(api, admin, kind, remotes) for kind in ("slack", "email", "webhook")]
    request = NotificationRequest(
        event="pipeline.failed",
        context=CONTEXT,
        channel_ids=[uuid.UUID(i) for i in ids],
        user_ids=[user_id],
        reference="pipeline-run:42",
    )
    async with worker(temporal_env, api, remotes, queue):
        summary = await send(temporal_env.client, queue, request)
    assert summary.count("delivered") == 5, summary  # slack channel + DM, 2 emails, webhook

    posted = remotes.slack.calls("chat.postMessage")
    assert {r.channel for r in posted} == {"#deploys", SLACK_USER}
    assert all(r.token == TOKEN and r.blocks for r in posted)
    mails = remotes.smtp.messages
    assert sorted(a for m in mails for a in m.rcpt_tos) == sorted(["ops@example.com", user_email])
    html = mails[0].message.get_body(("html",))
    assert html is not None and "&lt;script&gt;" in html.get_content()
    [hook] = remotes.hooks.accepted
    assert hook.signature_valid and hook.event == "pipeline.failed"
    assert hook.json()["data"]["pipeline"] == "api-build" if "data" in hook.json() else True

    rows = await records(api, request)
    assert len(rows) == 5 and {r.status for r in rows} == {"delivered"}
    assert all(r.attempts == 1 and r.delivered_at and r.sent_at for r in rows)
    assert {r.reference for r in rows} == {"pipeline-run:42"}
    assert hook.delivery_id in {str(r.id) for r in rows}

    listed = await api.client.get(f"/notifications?request_id={request.request_id}", headers=admin)
    assert len(listed.json()["items"]) == 5
    detail = await api.client.get(f"/notifications/{rows[0].id}", headers=admin)
    assert detail.status_code == 200
    assert [a["status"] for a in detail.json()["attempt_log"]] == ["succeeded"]
    for secret in (TOKEN, SIGNING_SECRET):
        assert secret not in listed.text + detail.text


async def test_a_channel_down_for_a_while_gets_the_message_once(
    api: Api, temporal_env: WorkflowEnvironment, remotes: Remotes
) -> None:
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    _, admin = await api.token("admin")
    ids = [await channel(api, admin, kind, remotes) for kind in ("slack", "email", "webhook")]
    remotes.slack.fail_next(2, status=500)
    remotes.hooks.respond_next(2, 503)
    remotes.smtp.stop()
    request = NotificationRequest(
        event="custom",
        context={"title": "Down and up", "message": "retries"},
        channel_ids=[uuid.UUID(i) for i in ids],
    )
    async with worker(temporal_env, api, remotes, queue):
        workflow_id = await start_notification(temporal_env.client, request, task_queue=queue)
        await until(lambda: failed_attempts(api, request, "email"), at_least=2)
        remotes.smtp.start()
        summary = await temporal_env.client.get_workflow_handle(
            workflow_id, result_type=NotificationSummary
        ).result()
    assert summary.count("delivered") == 3, summary
    assert len(remotes.slack.messages) == 1 and len(remotes.smtp.messages) == 1
    assert len(remotes.hooks.accepted) == 1
    for row in await records(api, request):
        log = await attempts(api, row.id)
        assert [a.status for a in log][-1] == "succeeded"
        assert all(a.status == "failed" and a.error and a.retryable for a in log[:-1])
        assert row.attempts == len(log) >= 3 if row.channel_type != "email" else len(log) >= 3


async def failed_attempts(api: Api, request: NotificationRequest, channel_type: str) -> int:
    rows = [r for r in await records(api, request) if r.channel_type == channel_type]
    if not rows:
        return 0
    return sum(1 for a in await attempts(api, rows[0].id) if a.status == "failed")


async def until(probe: Any, at_least: int, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await probe() >= at_least:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out waiting")


async def test_permanent_failures_and_exhausted_retries_end_failed_with_the_reason(
    api: Api, temporal_env: WorkflowEnvironment, remotes: Remotes
) -> None:
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    _, admin = await api.token("admin")
    unknown_channel = await channel(api, admin, "slack", remotes, channel="#nowhere")
    gone = await channel(api, admin, "webhook", remotes, url=remotes.hooks.url_for("/gone"))
    remotes.hooks.respond_next(1, 404)
    request = NotificationRequest(
        event="custom",
        context={"title": "t", "message": "m"},
        channel_ids=[uuid.UUID(unknown_channel), uuid.UUID(gone)],
    )
    async with worker(temporal_env, api, remotes, queue):
        summary, error = await send_failing(temporal_env.client, queue, request)
    assert summary.count("failed") == 2 and summary.status() == "failed"
    assert error.message.startswith("2 of 2 deliveries of custom failed: ")
    assert "(slack): permanent failure" in error.message and "(webhook): " in error.message
    rows = {r.channel_type: r for r in await records(api, request)}
    assert rows["slack"].status == "failed" and "channel_not_found" in (
        rows["slack"].last_error or ""
    )
    assert "permanent failure" in (rows["slack"].last_error or "")
    assert "404" in (rows["webhook"].last_error or "")
    assert rows["slack"].attempts == 1 and rows["webhook"].attempts == 1

    # A receiver that never recovers: every allowed attempt, then failed, saying so.
    always_down = await channel(api, admin, "webhook", remotes)
    remotes.hooks.respond_next(MAX_ATTEMPTS + 5, 500)
    request = NotificationRequest(
        event="custom", context={"title": "t", "message": "m"}, channel_ids=[uuid.UUID(always_down)]
    )
    async with worker(temporal_env, api, remotes, queue):
        summary, error = await send_failing(temporal_env.client, queue, request)
    [row] = await records(api, request)
    assert row.status == "failed" and row.attempts == MAX_ATTEMPTS
    assert error.message.endswith(f"(webhook): {row.last_error}")
    assert (row.last_error or "").startswith("gave up after the last allowed attempt")
    assert len(await attempts(api, row.id)) == MAX_ATTEMPTS


def idp(attributes: TypedSearchAttributes) -> dict[str, str]:
    """The platform's search attributes of an execution, by name."""
    return {
        key.name: value
        for key in search_attributes.ALL
        if (value := attributes.get(key)) is not None
    }


async def test_the_operator_sees_failed_delivered_and_skipped_requests(
    api: Api, temporal_env: WorkflowEnvironment, remotes: Remotes
) -> None:
    """In the Temporal UI: a channel that never takes the message is a FAILED execution
    (DeliveryFailed naming the channel, no credential) with IdpStatus failed; a delivered one
    completes `delivered`; one every recipient turned off completes `skipped`."""
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    client = temporal_env.client
    _, admin = await api.token("admin")
    url_token = "tok-in-the-url-0123456789"
    down = await channel(
        api, admin, "webhook", remotes, url=remotes.hooks.url_for(f"/down?t={url_token}")
    )
    up = await channel(api, admin, "webhook", remotes)
    names = {}
    for channel_id in (down, up):
        shown = await api.client.get(f"/notifications/channels/{channel_id}", headers=admin)
        names[channel_id] = shown.json()["name"]
    user_id, user_email = await api.user("viewer")
    off = {"preferences": [{"channel_type": "email", "event": "custom", "enabled": False}]}
    login = await api.login(user_email)
    await api.client.put(
        "/users/me/notification-preferences",
        json=off,
        headers={"Authorization": f"Bearer {login['access_token']}"},
    )
    personal_only = await channel(api, admin, "email", remotes, to=[])
    remotes.hooks.respond_next(MAX_ATTEMPTS, 500)  # every attempt to `down`, the first sent
    context = {"title": "t", "message": "m", "service": "shop"}
    failing = NotificationRequest(event="custom", context=context, channel_ids=[uuid.UUID(down)])
    delivered = NotificationRequest(event="custom", context=context, channel_ids=[uuid.UUID(up)])
    skipped = NotificationRequest(
        event="custom",
        context=context,
        channel_ids=[uuid.UUID(personal_only)],
        user_ids=[user_id],
    )
    down_label = channel_label("webhook", names[down])
    async with worker(temporal_env, api, remotes, queue):
        outcome, error = await send_failing(client, queue, failing)
        assert (await send(client, queue, delivered)).status() == "delivered"
        assert (await send(client, queue, skipped)).status() == "skipped"

    assert outcome.count("failed") == 1
    assert error.message.startswith(f"1 of 1 deliveries of custom failed: {down_label}: ")
    assert "gave up after the last allowed attempt" in error.message
    assert url_token not in error.message and SIGNING_SECRET not in error.message

    expected = [
        (failing, WorkflowExecutionStatus.FAILED, "failed"),
        (delivered, WorkflowExecutionStatus.COMPLETED, "delivered"),
        (skipped, WorkflowExecutionStatus.COMPLETED, "skipped"),
    ]
    for request, status, idp_status in expected:
        workflow_id = f"notification-{request.request_id}"
        [found] = await executions(
            client, f"WorkflowId = '{workflow_id}' AND IdpStatus = '{idp_status}'"
        )
        assert found.status == status
        assert idp(found.typed_search_attributes) == {"IdpStatus": idp_status}
    # What failed tonight, as the operator asks for it.
    failures = await executions(
        client,
        f"WorkflowType = 'NotificationWorkflow' AND TaskQueue = '{queue}' "
        "AND ExecutionStatus = 'Failed' AND IdpStatus = 'failed'",
    )
    assert [f.id for f in failures] == [f"notification-{failing.request_id}"]

    handle = client.get_workflow_handle(f"notification-{failing.request_id}")
    description = await handle.describe()
    assert await description.static_summary() == "notify 1 channel of custom for shop"
    assert await activity_summaries(client, handle) == [
        "render custom for its recipients",
        f"deliver to {down_label}",
        f"record the failed delivery to {down_label}",
    ]
    handle = client.get_workflow_handle(f"notification-{skipped.request_id}")
    assert await activity_summaries(client, handle) == ["render custom for its recipients"]


async def test_a_database_that_stays_down_fails_the_request_naming_it(
    temporal_env: WorkflowEnvironment, topology: Topology
) -> None:
    """The delivery records cannot be written (the `db` retries used up): the platform did
    not do its job, so the execution FAILED (NotificationRecordFailed), IdpStatus failed."""
    db = topology.activities["db"]
    quick = db.model_copy(
        update={
            "retry": db.retry.model_copy(
                update={"initial_interval": timedelta(milliseconds=100), "maximum_attempts": 2}
            )
        }
    )
    policies.install(
        topology.model_copy(update={"activities": {**topology.activities, "db": quick}})
    )
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing")  # refused
    acts = NotificationActivities(session_factory(engine), SenderSettings())
    request = NotificationRequest(
        event="custom", context={"title": "t", "message": "m"}, channel_ids=[uuid.uuid4()]
    )
    try:
        async with Worker(
            temporal_env.client,
            task_queue=queue,
            workflows=[NotificationWorkflow],
            activities=[acts.prepare, acts.deliver, acts.mark_failed],
            workflow_runner=sandbox_runner(),
        ):
            with pytest.raises(WorkflowFailureError) as caught:
                await send(temporal_env.client, queue, request)
    finally:
        await engine.dispose()
    error = caught.value.cause
    assert isinstance(error, ApplicationError) and error.type == RECORD_FAILED, error
    assert error.message.startswith("the delivery records of custom could not be written: ")
    workflow_id = f"notification-{request.request_id}"
    await executions(temporal_env.client, f"WorkflowId = '{workflow_id}' AND IdpStatus = 'failed'")


async def test_a_request_that_completed_on_a_failed_delivery_before_still_replays() -> None:
    """Recorded by the code from before a failed delivery failed the workflow: it completed,
    and replays to completion (`FAILS_ON_DELIVERY_FAILURE` is not patched in)."""
    history = WorkflowHistory.from_json(
        "old", (HISTORIES / "notification_delivery_failed_before_failing.json").read_text()
    )
    assert history.events[-1].HasField("workflow_execution_completed_event_attributes")
    await Replayer(
        workflows=[NotificationWorkflow],
        data_converter=data_converter(),
        workflow_runner=sandbox_runner(),
    ).replay_workflow(history)


async def test_slack_rate_limit_waits_for_retry_after(
    api: Api, temporal_env: WorkflowEnvironment, remotes: Remotes
) -> None:
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    _, admin = await api.token("admin")
    slack = await channel(api, admin, "slack", remotes)
    remotes.slack.rate_limit_next(1, retry_after=2)
    request = NotificationRequest(
        event="custom", context={"title": "t", "message": "m"}, channel_ids=[uuid.UUID(slack)]
    )
    async with worker(temporal_env, api, remotes, queue):
        summary = await send(temporal_env.client, queue, request)
    assert summary.count("delivered") == 1
    [row] = await records(api, request)
    first, second = await attempts(api, row.id)
    assert first.retry_after == 2 and first.retryable
    assert first.finished_at is not None
    # Our backoff would retry after 0.2 s; Slack asked for 2 s, and got it.
    assert (second.started_at - first.finished_at).total_seconds() >= 1.5


async def test_a_worker_killed_during_the_backoff_is_replaced_and_the_message_arrives(
    api: Api, temporal_env: WorkflowEnvironment, remotes: Remotes, topology: Topology
) -> None:
    policies.install(fast(topology, initial=timedelta(seconds=3)))
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    _, admin = await api.token("admin")
    hook = await channel(api, admin, "webhook", remotes)
    remotes.hooks.respond_next(1, 500)
    request = NotificationRequest(
        event="custom", context={"title": "t", "message": "m"}, channel_ids=[uuid.UUID(hook)]
    )
    engine = create_engine(api.settings.effective_database_url)
    acts = NotificationActivities(session_factory(engine), SenderSettings(egress=local_egress()))
    first = Worker(
        temporal_env.client,
        task_queue=queue,
        workflows=[NotificationWorkflow],
        activities=[acts.prepare, acts.deliver, acts.mark_failed],
        workflow_runner=sandbox_runner(),
    )
    running = asyncio.create_task(first.run())
    workflow_id = await start_notification(temporal_env.client, request, task_queue=queue)
    await until(lambda: failed_attempts(api, request, "webhook"), at_least=1)
    running.cancel()  # the worker dies in the middle of the 3 s backoff
    with pytest.raises(asyncio.CancelledError):
        await running
    await engine.dispose()
    assert remotes.hooks.accepted == []

    async with worker(temporal_env, api, remotes, queue):
        summary = await temporal_env.client.get_workflow_handle(
            workflow_id, result_type=NotificationSummary
        ).result()
    assert summary.count("delivered") == 1
    assert len(remotes.hooks.accepted) == 1
    [row] = await records(api, request)
    assert row.status == "delivered" and row.attempts == 2


async def test_preferences_templates_and_message_updates(
    api: Api, temporal_env: WorkflowEnvironment, remotes: Remotes
) -> None:
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    _, admin = await api.token("admin")
    user_id, user_email = await api.user("viewer")
    token = (await api.login(user_email))["access_token"]
    prefs = {"preferences": [{"channel_type": "email", "event": "custom", "enabled": False}]}
    await api.client.put(
        "/users/me/notification-preferences",
        json=prefs,
        headers={"Authorization": f"Bearer {token}"},
    )
    email = await channel(api, admin, "email", remotes, to=[])
    slack = await channel(api, admin, "slack", remotes)
    request = NotificationRequest(
        event="custom",
        context={"title": "t"},  # `message` is missing: the template cannot render
        channel_ids=[uuid.UUID(email), uuid.UUID(slack)],
        user_ids=[user_id],
    )
    approval = NotificationRequest(
        event="promotion.awaiting_approval",
        context={
            "promotion_id": "p-1",
            "promotion_url": "http://idp.test/promotions/p-1",
            "service": "payments",
            "version": "1.4.0",
            "environment": "production",
            "requested_by": "alice",
            "approvers_needed": 2,
            "approvals": 0,
            "expires_at": "2026-12-01T00:00:00Z",
        },
        channel_ids=[uuid.UUID(slack)],
    )
    async with worker(temporal_env, api, remotes, queue):
        # A template that does not render fails the request (an operator must fix it)...
        summary, error = await send_failing(temporal_env.client, queue, request)
        sent = await send(temporal_env.client, queue, approval)
        [message] = await records(api, approval)
        updated = await temporal_env.client.execute_workflow(
            SlackMessageUpdateWorkflow.run,
            MessageUpdate(
                notification_id=message.id,
                event="promotion.approved",
                context={**approval.context, "decided_by": "bob", "comment": "ship it"},
            ),
            id=f"update-{uuid.uuid4()}",
            task_queue=queue,
        )
        # An update that cannot be made fails its workflow, saying which message and why.
        never_sent = uuid.uuid4()
        with pytest.raises(WorkflowFailureError) as caught:
            await temporal_env.client.execute_workflow(
                SlackMessageUpdateWorkflow.run,
                MessageUpdate(notification_id=never_sent, event="promotion.approved"),
                id=f"update-{uuid.uuid4()}",
                task_queue=queue,
            )
    refused = caught.value.cause
    assert isinstance(refused, ApplicationError) and refused.type == MESSAGE_UPDATE_FAILED
    assert refused.message == (
        f"updating Slack message {never_sent} to promotion.approved failed: permanent failure: "
        f"notification {never_sent} was not delivered; nothing to update"
    )
    rows = {(r.channel_type, r.user_id is not None): r for r in await records(api, request)}
    turned_off = rows[("email", True)]
    assert turned_off.status == "skipped" and "preferences" in (turned_off.last_error or "")
    no_slack_id = rows[("slack", True)]
    assert no_slack_id.status == "skipped" and "Slack user id" in (no_slack_id.last_error or "")
    unrendered = rows[("slack", False)]
    assert unrendered.status == "failed" and unrendered.attempts == 0
    assert "did not render" in (unrendered.last_error or "")
    assert "message" in (unrendered.last_error or "")
    assert summary.count("skipped") == 2 and summary.count("failed") == 1
    # ...and says which channel, not the recipients who turned the event off.
    assert "1 of 3 deliveries of custom failed" in error.message
    assert "(slack): the template did not render" in error.message

    assert sent.count("delivered") == 1 and updated.status == "delivered"
    posted = remotes.slack.calls("chat.postMessage")[-1]
    actions = [b for b in posted.blocks or [] if b.get("type") == "actions"]
    buttons = {e["action_id"]: e for e in actions[0]["elements"]}
    assert buttons["promotion.approve"]["value"] == buttons["promotion.reject"]["value"] == "p-1"
    [update] = remotes.slack.calls("chat.update")
    assert update.ts == message.remote_id
    decided = [e.get("action_id") for b in update.blocks or [] for e in b.get("elements", [])]
    assert "promotion.approve" not in decided and "approved" in (update.text or "").lower()


async def test_post_notifications_starts_the_workflow_and_refuses_bad_requests(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    remotes: Remotes,
) -> None:
    target = temporal_env.client.service_client.config.target_host
    with_temporal = settings.model_copy(update={"temporal_address": target})
    async with running_api(with_temporal, topology, database_url) as api:
        # The API's client encrypts payloads: the worker needs the same codec.
        client = await connect(api.settings, topology)
        _, admin = await api.token("admin")
        _, sender_email = await api.user("admin")
        login = await api.login(sender_email)
        sender = {"Authorization": f"Bearer {login['access_token']}"}
        hook = await channel(api, admin, "webhook", remotes)
        body = {
            "event": "custom",
            "context": {"title": "Hello", "message": "from the API"},
            "channel_ids": [hook],
        }
        async with worker(client, api, remotes, NOTIFICATIONS_QUEUE):
            sent = await api.client.post("/notifications", json=body, headers=sender)
            assert sent.status_code == 202, sent.text
            workflow_id = sent.json()["workflow_id"]
            assert workflow_id == f"notification-{sent.json()['request_id']}"
            handle = client.get_workflow_handle(workflow_id, result_type=NotificationSummary)
            summary = await asyncio.wait_for(handle.result(), timeout=60)
        assert summary.count("delivered") == 1
        # The UI names the channel the API had loaded, and who sent it.
        hook_name = (await api.client.get(f"/notifications/channels/{hook}", headers=admin)).json()[
            "name"
        ]
        assert await (await handle.describe()).static_summary() == (
            f"notify {hook_name} (webhook) of custom"
        )
        [found] = await executions(
            client, f"WorkflowId = '{workflow_id}' AND IdpActor = '{sender_email}'"
        )
        assert idp(found.typed_search_attributes) == {
            "IdpActor": sender_email,
            "IdpStatus": "delivered",
        }
        assert remotes.hooks.accepted[0].json()["data"]["message"] == "from the API"
        listed = await api.client.get(
            f"/notifications?request_id={sent.json()['request_id']}&status=delivered",
            headers=admin,
        )
        assert [n["status"] for n in listed.json()["items"]] == ["delivered"]
        [audited] = await api.fetch(
            select(AuditLog).where(AuditLog.resource_id == sent.json()["request_id"])
        )
        assert audited.action == "notification.send"
        assert audited.after["variables"] == ["message", "title"]

        _, viewer = await api.token("viewer")
        assert_error(await api.client.post("/notifications", json=body, headers=viewer), 403)
        for bad, status in (
            ({**body, "event": "no.such.event"}, 422),
            ({**body, "channel_ids": [str(uuid.uuid4())]}, 404),
            ({**body, "user_ids": [str(uuid.uuid4())]}, 422),
            ({**body, "channel_ids": []}, 422),
        ):
            assert_error(await api.client.post("/notifications", json=bad, headers=admin), status)
        await api.client.patch(
            f"/notifications/channels/{hook}", json={"enabled": False}, headers=admin
        )
        disabled = await api.client.post("/notifications", json=body, headers=admin)
        assert "disabled" in assert_error(disabled, 422)["message"]
