"""Workflow latency on the Temporal dev server: starting a workflow (the RPC a webhook or an
API call waits for) and running SelfCheckWorkflow end to end, against a no-op workflow (the
floor: the engine's own cost for a workflow task)."""

from __future__ import annotations

import os
import time
import uuid

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from bench.stats import report
from core.settings import Settings
from core.topology import load_topology
from workers.resources import WorkerResources
from workers.runner import build_workers
from workflows.selfcheck import SelfCheckInput, SelfCheckWorkflow

RUNS = int(os.environ.get("BENCH_WORKFLOWS", "50"))


@workflow.defn(sandboxed=False)
class NoopWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None


async def run(client: Client, settings: Settings) -> None:
    topology = load_topology(settings.temporal_config)
    resources = WorkerResources.create(settings, topology)
    suffix = uuid.uuid4().hex[:6]
    names = {q: f"{q}-{suffix}" for q in topology.task_queues}
    workers = [
        *build_workers(client, resources, task_queue_names=names),
        Worker(client, task_queue=f"noop-{suffix}", workflows=[NoopWorkflow]),
    ]
    for w in workers:
        await w.__aenter__()
    try:
        start_floor, run_floor, start_ms, run_ms = [], [], [], []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            handle = await client.start_workflow(
                NoopWorkflow.run, id=f"noop-{uuid.uuid4()}", task_queue=f"noop-{suffix}"
            )
            t1 = time.perf_counter()
            await handle.result()
            start_floor.append((t1 - t0) * 1000)
            run_floor.append((time.perf_counter() - t0) * 1000)
        for _ in range(RUNS):
            t0 = time.perf_counter()
            check = await client.start_workflow(
                SelfCheckWorkflow.run,
                SelfCheckInput(task_queues=list(names.values())),
                id=f"selfcheck-{uuid.uuid4()}",
                task_queue=names["platform"],
            )
            t1 = time.perf_counter()
            result = await check.result()
            assert result.ok
            start_ms.append((t1 - t0) * 1000)
            run_ms.append((time.perf_counter() - t0) * 1000)
        report("floor: start no-op workflow", start_floor)
        report("floor: no-op workflow start -> result", run_floor)
        report("start SelfCheckWorkflow (RPC)", start_ms, start_floor)
        report(f"SelfCheckWorkflow start -> result ({len(names)} queues)", run_ms, run_floor)
    finally:
        for w in reversed(workers):
            await w.__aexit__(None, None, None)
        await resources.close()
