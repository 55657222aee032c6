"""Notifications delivered per second through the whole NotificationWorkflow (prepare the
record, render, sign, POST to a local webhook receiver, record the attempt and the success)
against the floor: the same number of workflows that each run one no-op activity, on the same
dev server in the same run. Both are started all at once and timed until the last completes."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from core.db.engine import transaction
from core.local_secrets import with_local_secrets
from core.notifications.channels import ChannelService
from core.notifications.messages import NotificationRequest, NotificationSummary
from core.notifications.starter import start_notification
from core.settings import Settings
from core.topology import load_topology
from tests.standins.webhook_receiver import WebhookReceiver
from workers.resources import WorkerResources
from workers.runner import build_workers

COUNT = int(os.environ.get("BENCH_NOTIFICATIONS", "200"))
SECRET = "whsec_bench_" + "s" * 32


@activity.defn(name="bench.noop")
async def noop() -> None:
    return None


@workflow.defn(sandboxed=False)
class OneActivityWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=30))


async def timed(count: int, start_one: Callable[[int], Awaitable[object]]) -> float:
    """Seconds from starting `count` workflows at once until the last has finished."""
    t0 = time.perf_counter()
    await asyncio.gather(*(start_one(i) for i in range(count)))
    return time.perf_counter() - t0


async def run(client: Client, settings: Settings) -> None:
    settings = with_local_secrets(settings)  # channel credentials are encrypted at rest
    # The receiver listens on loopback, which the egress guard refuses unless allowed.
    settings = settings.model_copy(update={"egress_allowed_cidrs": ("127.0.0.0/8",)})
    topology = load_topology(settings.temporal_config)
    resources = WorkerResources.create(settings, topology)
    suffix = uuid.uuid4().hex[:6]
    names = {q: f"{q}-{suffix}" for q in topology.task_queues}
    floor_queue = f"floor-{suffix}"
    with WebhookReceiver(secret=SECRET) as receiver:
        async with transaction(resources.sessions) as session:
            created = await ChannelService(session).create(
                type="webhook",
                name="bench",
                config={"url": receiver.url},
                secrets={"signing_secret": SECRET},
            )
        channel_id = created.channel.id
        workers = [
            *build_workers(client, resources, ["notifications"], task_queue_names=names),
            Worker(
                client,
                task_queue=floor_queue,
                workflows=[OneActivityWorkflow],
                activities=[noop],
                max_concurrent_activities=50,
            ),
        ]
        for w in workers:
            await w.__aenter__()
        try:

            async def floor_one(i: int) -> None:
                await client.execute_workflow(
                    OneActivityWorkflow.run, id=f"floor-{suffix}-{i}", task_queue=floor_queue
                )

            async def notify_one(i: int) -> None:
                request = NotificationRequest(
                    event="custom",
                    context={"title": f"bench {i}", "message": "throughput"},
                    channel_ids=[channel_id],
                )
                workflow_id = await start_notification(
                    client, request, task_queue=names["notifications"]
                )
                summary = await client.get_workflow_handle(
                    workflow_id, result_type=NotificationSummary
                ).result()
                assert summary.count("delivered") == 1, summary

            await timed(10, floor_one)  # warm-up
            floor_s = await timed(COUNT, floor_one)
            notify_s = await timed(COUNT, notify_one)
        finally:
            for w in reversed(workers):
                await w.__aexit__(None, None, None)
            await resources.close()
        delivered = len(receiver.accepted)
    floor_rate, notify_rate = COUNT / floor_s, COUNT / notify_s
    print(
        f"{'floor: workflow + 1 no-op activity':<44} n={COUNT:<5} {floor_rate:8.1f}/s",
        flush=True,
    )
    print(
        f"{'notifications delivered (webhook, signed)':<44} n={COUNT:<5} {notify_rate:8.1f}/s"
        f"  x{notify_rate / floor_rate:.2f} of floor rate  ({delivered} received, verified)",
        flush=True,
    )
