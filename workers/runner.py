"""Build and run one Temporal worker per task queue, as temporal.yaml describes them."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from core.catalog.health_starter import ensure_monitors
from core.errors import ConfigError
from core.pipelines.dispatch import ensure_queued_runs
from core.settings import Settings
from core.temporal import policies
from core.temporal.client import connect
from core.temporal.search_attribute_setup import check_registered
from core.topology import Topology
from workers.registry import BINDINGS, activities_for, check_topology
from workers.resources import WorkerResources
from workers.schedules import sync_schedules
from workflows.health_monitor import HEALTH_QUEUE
from workflows.pipeline_run import PIPELINES_QUEUE

log = logging.getLogger("idp.worker")

# Modules workflows share with the host process instead of re-importing them per run:
# `core` holds the installed topology (activity options) and the request context.
PASSTHROUGH = ("core", "pydantic", "pydantic_core", "annotated_types", "sqlalchemy", "yaml")


HEARTBEAT_THROTTLE = timedelta(seconds=2)


def sandbox_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def select_queues(topology: Topology, wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return list(topology.task_queues)
    unknown = [q for q in wanted if q not in topology.task_queues]
    if unknown:
        raise ConfigError(
            f"unknown task queue {unknown[0]!r}; temporal.yaml declares: "
            f"{', '.join(topology.task_queues)}"
        )
    return list(dict.fromkeys(wanted))


def build_workers(
    client: Client,
    resources: WorkerResources,
    queues: Sequence[str] | None = None,
    *,
    task_queue_names: dict[str, str] | None = None,
) -> list[Worker]:
    """One worker per queue. `task_queue_names` maps a queue to another name (tests isolate so)."""
    topology = resources.topology
    check_topology(topology)
    policies.install(topology)
    workers = []
    for queue in select_queues(topology, queues):
        spec = topology.task_queues[queue]
        workers.append(
            Worker(
                client,
                task_queue=(task_queue_names or {}).get(queue, queue),
                workflows=list(BINDINGS[queue].workflows),
                activities=activities_for(queue, resources),
                max_concurrent_workflow_tasks=spec.max_concurrent_workflow_tasks,
                max_concurrent_activities=spec.max_concurrent_activities,
                workflow_runner=sandbox_runner(),
                graceful_shutdown_timeout=timedelta(seconds=10),
                # A cancel reaches an activity with a heartbeat's answer; by default heartbeats
                # go out at 80% of the heartbeat timeout (24 s for a step), too slow to stop it.
                max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            )
        )
    return workers


async def reconcile_health_monitors(client: Client, resources: WorkerResources) -> None:
    """Every enabled health check gets a monitor (one created while Temporal was down has
    none). A failure is logged, not fatal: the next worker start tries again."""
    try:
        await ensure_monitors(client, resources.sessions)
    except Exception as exc:
        log.warning("could not start the missing health monitors: %s", exc)


async def reconcile_queued_runs(client: Client, resources: WorkerResources) -> None:
    """Pipeline runs recorded while Temporal was down get their workflow. A failure is
    logged, not fatal: the next worker start tries again."""
    try:
        await ensure_queued_runs(client, resources.sessions)
    except Exception as exc:
        log.warning("could not start the queued pipeline runs: %s", exc)


async def run_workers(settings: Settings, topology: Topology, queues: Sequence[str] | None) -> None:
    """Serve `queues` (default: all) until SIGINT/SIGTERM, then shut down gracefully."""
    selected = select_queues(topology, queues)
    check_topology(topology)
    resources = WorkerResources.create(settings, topology)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        client = await connect(settings, topology)
        await check_registered(client)  # before polling: see core/temporal/search_attribute_setup
        workers = build_workers(client, resources, selected)
        await sync_schedules(
            client, topology, queues=set(selected), prune=len(selected) == len(topology.task_queues)
        )
        if HEALTH_QUEUE in selected:
            await reconcile_health_monitors(client, resources)
        if PIPELINES_QUEUE in selected:
            await reconcile_queued_runs(client, resources)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        log.info("worker serving task queues: %s", ", ".join(selected))
        done, _ = await asyncio.wait(
            [*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:  # a worker that died on its own is an error worth raising
            if task in tasks and task.exception():
                raise task.exception()  # type: ignore[misc]
        log.info("worker shutting down")
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    finally:
        await resources.close()
