"""Promotion approval latency, on the Temporal dev server with real local deploys.

1. **Approval → deploy activity start.** A production environment that needs one approval
   (an approver team, no previous environment, so the policy gate passes at once). For each
   iteration a new version is requested into it; once the promotion awaits approval and its
   approval request is delivered to Slack (the stand-in; waited for in both variants, so an
   approval never races that delivery), the approval is sent and the latency runs
   from just before it to the entry of the `promotions.deploy` activity (a subclass of
   PromotionActivities, on the bench's promotions worker, records it). Two ways to approve:
   - **API:** `POST /promotions/{id}/approve` over real HTTP (uvicorn) with an approver's
     bearer token;
   - **Slack:** a signed `block_actions` button press to `/integrations/slack/interactions`
     (the Slack user maps to the approver by email through the stand-in's `users.info`).
   Each promotion succeeds (deploy + a 1 s verification) before the next one starts.
   `BENCH_PROMOTIONS` (default 30) of each, after 2 warm-up rounds.
2. **The floor, in the same run:** a bare workflow waiting on a flag that an Update sets,
   then running one activity; from just before `execute_update` to that activity's entry.

Everything runs in this process (API, workers, floor worker) on a throw-away SQLite file; the
service's versions are a small HTTP app run by the `local` deploy target.
Alone: `python -m bench.promotion_latency`."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from activities.promotions import PromotionActivities
from activities.selfcheck import PingActivities
from api.app import create_app
from bench.server import run_alone
from bench.stats import report, summary
from core.db import migrate
from core.db.engine import transaction
from core.local_secrets import with_local_secrets
from core.models.notifications import Notification
from core.promotions.messages import DeployInput, DeployResult, PromotionView
from core.settings import Settings
from core.temporal import policies
from core.temporal.client import connect
from core.topology import load_topology
from tests.integration.identity_helpers import Api
from tests.integration.promotion_helpers import (
    APP,
    BOT_TOKEN,
    SLACK_CHANNEL,
    SLACK_TEAM,
    Person,
    PromotionStack,
    World,
    slack_headers,
    slack_interaction,
    stop_all,
)
from tests.standins.slack_api import SlackApiStandin
from workers.registry import deploy_targets
from workers.resources import WorkerResources
from workers.runner import HEARTBEAT_THROTTLE, build_workers, sandbox_runner
from workflows.promotion import PROMOTIONS_QUEUE, PromotionWorkflow

PROMOTIONS = int(os.environ.get("BENCH_PROMOTIONS", "30"))
WARMUP = 2  # rounds not counted
SIGNING_SECRET = "bench-slack-signing-secret"
SLACK_USER = "U0BENCHAPPROVER"
POLL = 0.01  # seconds between looks while waiting for a state (never inside a measurement)


class TimedPromotionActivities(PromotionActivities):
    """PromotionActivities whose deploy notes when it is entered (perf_counter_ns), by
    promotion; the first attempt counts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deploy_started: dict[uuid.UUID, int] = {}

    @activity.defn(name="promotions.deploy")
    async def deploy(self, input: DeployInput) -> DeployResult:
        self.deploy_started.setdefault(input.promotion_id, time.perf_counter_ns())
        return await super().deploy(input)


FLOOR_MARKS: dict[str, int] = {}


@activity.defn(name="bench.mark_start")
async def mark_start(key: str) -> None:
    FLOOR_MARKS.setdefault(key, time.perf_counter_ns())


@workflow.defn(sandboxed=False)
class UpdateThenActivityWorkflow:
    """Waits until the `go` Update sets its flag, then runs one activity."""

    def __init__(self) -> None:
        self._go = False

    @workflow.run
    async def run(self, key: str) -> None:
        await workflow.wait_condition(lambda: self._go)
        await workflow.execute_activity(
            mark_start, key, start_to_close_timeout=timedelta(seconds=30)
        )

    @workflow.update
    async def go(self) -> None:
        self._go = True


async def _until(what: str, probe: Any, timeout: float = 60) -> Any:
    """Poll the coroutine function `probe` until it answers something truthy; that answer."""
    deadline = time.monotonic() + timeout
    while not (found := await probe()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)
    return found


async def _approval_request(
    sessions: async_sessionmaker[AsyncSession], slack: SlackApiStandin, promotion_id: str
) -> str:
    """The ts of the promotion's approval request, once posted to Slack and recorded as
    delivered (what the Slack route looks the bot token up by)."""

    async def posted() -> str | None:
        sent = [
            r.ts
            for r in slack.calls("chat.postMessage")
            if r.ok and r.ts and promotion_id in str(r.blocks)
        ]
        if not sent:
            return None
        async with transaction(sessions) as session:
            found = await session.scalar(
                select(Notification.remote_id).where(
                    Notification.reference == f"promotion:{promotion_id}",
                    Notification.event == "promotion.awaiting_approval",
                    Notification.status == "delivered",
                    Notification.remote_id.in_(sent),
                )
            )
        return str(found) if found else None

    ts: str = await _until(f"promotion {promotion_id}'s approval request in Slack", posted)
    return ts


async def _setup(stack: PromotionStack, versions: int) -> tuple[World, str, Person]:
    """An organization with a service (its owner team has a Slack channel), an approvers team
    with one approver, a production environment needing one approval and no previous one,
    and `versions` versions. Returns the world, the environment id and the approver."""
    world = await stack.world(prod_policy={"required_approvals": 1}, chain=("prod",))
    approver = await stack.person("approver", teams=(world.approvers_team,))
    for i in range(versions):
        await stack.version(world, f"1.0.{i}")
    return world, world.envs["prod"]["id"], approver


async def run(_: Client, base: Settings) -> None:
    """`_` (the dev server's plain client) is not used: workers and the floor use a client
    with the API's payload codec, as deployed workers do."""
    with SlackApiStandin(tokens={BOT_TOKEN}, channels={SLACK_CHANNEL: "deploys"}) as slack:
        await _run(base, slack)


async def _run(base: Settings, slack: SlackApiStandin) -> None:
    work = Path(tempfile.mkdtemp(prefix="idp-bench-promotions-"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = with_local_secrets(
        base.model_copy(
            update={
                "slack_signing_secret": SecretStr(SIGNING_SECRET),
                "slack_api_url": slack.base_url,
                # Presses are attributed by users.info's email in this (pinned) workspace.
                "slack_email_lookup_team_ids": (SLACK_TEAM,),
                "public_url": f"http://127.0.0.1:{port}",
                "rate_limit_enabled": False,
            }
        )
    )
    migrate.upgrade(settings.effective_database_url)
    topology = load_topology(settings.temporal_config)
    policies.install(topology)
    resources = WorkerResources.create(settings, topology)
    targets = deploy_targets(settings)
    timed = TimedPromotionActivities(
        resources.sessions, targets, platform_url=settings.platform_url
    )
    client = await connect(settings, topology)
    floor_queue = f"floor-{uuid.uuid4().hex[:6]}"
    spec = topology.task_queues[PROMOTIONS_QUEUE]
    workers = [
        *build_workers(client, resources, ["notifications"]),
        Worker(  # as build_workers makes it, with the timed deploy
            client,
            task_queue=PROMOTIONS_QUEUE,
            workflows=[PromotionWorkflow],
            activities=[PingActivities().ping, *timed.all()],
            max_concurrent_workflow_tasks=spec.max_concurrent_workflow_tasks,
            max_concurrent_activities=spec.max_concurrent_activities,
            workflow_runner=sandbox_runner(),
            graceful_shutdown_timeout=timedelta(seconds=10),
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        ),
        Worker(
            client,
            task_queue=floor_queue,
            workflows=[UpdateThenActivityWorkflow],
            activities=[mark_start],
        ),
    ]
    app = create_app(settings, topology)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    started_workers: list[Worker] = []
    try:
        for w in workers:
            await w.__aenter__()
            started_workers.append(w)
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            api = Api(app, http, settings)
            _, admin = await api.token("admin")
            app_path = work / "app.py"
            app_path.write_text(APP)
            stack = PromotionStack(api, client, admin, settings, slack, app_path)
            rounds = PROMOTIONS + WARMUP
            world, env_id, approver = await _setup(stack, 2 * rounds)
            slack.users[SLACK_USER] = approver.email
            versions = iter(range(2 * rounds))

            async def promote_and_approve(via: str) -> float:
                """One promotion approved `via` api or slack: ms from the approval to the
                deploy activity's start, once the promotion has succeeded."""
                row = await stack.created(
                    f"/environments/{env_id}/deploy",
                    {"service_id": world.service_id, "version": f"1.0.{next(versions)}"},
                )
                pid = row["id"]

                async def awaiting() -> bool:
                    got = await http.get(f"/promotions/{pid}", headers=admin)
                    got.raise_for_status()
                    return bool(got.json()["status"] == "awaiting_approval")

                await _until(f"promotion {pid} awaiting approval", awaiting)
                ts = await _approval_request(resources.sessions, slack, pid)
                if via == "api":
                    t0 = time.perf_counter_ns()
                    answer = await http.post(
                        f"/promotions/{pid}/approve", json={}, headers=approver.headers
                    )
                else:
                    body = slack_interaction(
                        "approve",
                        pid,
                        SLACK_USER,
                        message_ts=ts,
                        response_url=slack.response_url(uuid.uuid4().hex),
                    )
                    headers = slack_headers(body, secret=SIGNING_SECRET)
                    t0 = time.perf_counter_ns()
                    answer = await http.post(
                        "/integrations/slack/interactions", content=body, headers=headers
                    )
                if answer.status_code != 200 or slack.responses:
                    raise RuntimeError(
                        f"the {via} approval was refused: {answer.text} {slack.responses}"
                    )
                handle = client.get_workflow_handle(row["workflow_id"], result_type=PromotionView)
                view: PromotionView = await asyncio.wait_for(handle.result(), 120)
                if view.status != "succeeded":
                    raise RuntimeError(f"promotion {pid} ended {view.status}: {view.reason}")
                return (timed.deploy_started[uuid.UUID(pid)] - t0) / 1e6

            async def floor(i: int) -> float:
                key = f"floor-{i}"
                handle = await client.start_workflow(
                    UpdateThenActivityWorkflow.run,
                    key,
                    id=f"floor-{uuid.uuid4()}",
                    task_queue=floor_queue,
                )

                async def waiting() -> bool:  # its first workflow task is done
                    return (await handle.describe()).history_length >= 4

                await _until("the floor workflow waiting", waiting)
                f0 = time.perf_counter_ns()
                await handle.execute_update(UpdateThenActivityWorkflow.go)
                await handle.result()
                return (FLOOR_MARKS[key] - f0) / 1e6

            api_ms, slack_ms, floor_ms = [], [], []
            for i in range(rounds):
                by_api = await promote_and_approve("api")
                by_slack = await promote_and_approve("slack")
                bare = await floor(i)
                if i >= WARMUP:
                    api_ms.append(by_api)
                    slack_ms.append(by_slack)
                    floor_ms.append(bare)
            report("floor: Update -> wait_condition -> activity", floor_ms)
            report("API approval -> deploy activity started", api_ms, floor_ms)
            report("Slack approval -> deploy activity started", slack_ms, floor_ms)
            floor_p50 = summary(floor_ms)["p50"]
            for name, samples in (
                ("  (floor: Update -> activity)", floor_ms),
                ("  (API approval -> deploy)", api_ms),
                ("  (Slack approval -> deploy)", slack_ms),
            ):
                s = summary(samples)
                print(
                    f"{name:<44} median={s['p50']:.1f}ms p95={s['p95']:.1f}ms "
                    f"max={max(samples):.1f}ms ratio p50 x{s['p50'] / floor_p50:.2f}",
                    flush=True,
                )
    finally:
        for w in reversed(started_workers):
            await w.__aexit__(None, None, None)
        await stop_all(targets, settings.deploy_root)
        server.should_exit = True
        await serving
        await resources.close()


if __name__ == "__main__":
    asyncio.run(run_alone(run))
