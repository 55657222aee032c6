"""Workers built from temporal.yaml on a real Temporal dev server: the self-check, retry
policies by activity kind, context propagation, the data converter, schedules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHistory,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from core import context
from core.settings import Settings
from core.temporal import policies
from core.temporal.converter import data_converter
from core.topology import Topology
from tests.integration.flows import (
    ContextProbeWorkflow,
    RetryProbeWorkflow,
    SleepyWorkflow,
    flaky,
    whoami,
)
from tests.integration.operator_view import activity_summaries, executions
from workers.registry import workflow_name
from workers.resources import WorkerResources
from workers.runner import build_workers, sandbox_runner
from workers.schedules import build_schedule, schedule_id, sync_schedules
from workers.selfcheck import found_by
from workflows.selfcheck import (
    SELF_CHECK_FAILED,
    SelfCheckInput,
    SelfCheckResult,
    SelfCheckWorkflow,
)

HISTORIES = Path(__file__).parent.parent / "fixtures" / "histories"


@asynccontextmanager
async def running(workers: Sequence[Worker]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def resources(
    database_url: str, topology: Topology, settings: Settings
) -> AsyncIterator[WorkerResources]:
    res = WorkerResources.create(
        settings.model_copy(update={"database_url": database_url}), topology
    )
    yield res
    await res.close()


def unique_queues(topology: Topology) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {queue: f"{queue}-{suffix}" for queue in topology.task_queues}


async def test_selfcheck_sees_every_queue_and_the_schema(
    temporal_env: WorkflowEnvironment, resources: WorkerResources, topology: Topology
) -> None:
    names = unique_queues(topology)
    workers = build_workers(temporal_env.client, resources, task_queue_names=names)
    assert len(workers) == len(topology.task_queues)
    workflow_id = f"selfcheck-{uuid.uuid4()}"
    async with running(workers):
        result = await temporal_env.client.execute_workflow(
            SelfCheckWorkflow.run,
            SelfCheckInput(task_queues=list(names.values())),
            id=workflow_id,
            task_queue=names["platform"],
            result_type=SelfCheckResult,
        )
    assert result.ok
    # Started without attributes (as by the schedule): the workflow says running, then
    # succeeded; each ping is named in the timeline.
    await executions(
        temporal_env.client, f"WorkflowId = '{workflow_id}' AND IdpStatus = 'succeeded'"
    )
    summaries = await activity_summaries(
        temporal_env.client, temporal_env.client.get_workflow_handle(workflow_id)
    )
    assert sorted(summaries) == sorted(
        ["check the database schema", *(f"ping {queue}" for queue in names.values())]
    )
    assert result.database.ok and result.database.revision == result.database.expected_revision
    assert {q.task_queue for q in result.queues} == set(names.values())
    assert all(q.ok and q.worker for q in result.queues)
    assert result.checked_at.tzinfo is not None  # pydantic converter round-trips datetimes


async def test_selfcheck_reports_an_unserved_queue(
    temporal_env: WorkflowEnvironment, resources: WorkerResources, topology: Topology
) -> None:
    names = unique_queues(topology)
    platform_only = build_workers(
        temporal_env.client, resources, ["platform"], task_queue_names=names
    )
    workflow_id = f"selfcheck-{uuid.uuid4()}"
    async with running(platform_only):
        with pytest.raises(WorkflowFailureError) as caught:
            await temporal_env.client.execute_workflow(
                SelfCheckWorkflow.run,
                SelfCheckInput(
                    task_queues=[names["platform"], names["pipelines"]], ping_timeout_seconds=2
                ),
                id=workflow_id,
                task_queue=names["platform"],
                result_type=SelfCheckResult,
            )
    # A queue nobody serves is the platform failing: the execution FAILED, saying where.
    error = caught.value.cause
    assert isinstance(error, ApplicationError) and error.type == SELF_CHECK_FAILED
    assert error.message.startswith(
        f"self-check failed: task queue {names['pipelines']}: no worker answered: activity "
    ), error.message
    assert names["platform"] not in error.message and "database" not in error.message
    result = found_by(caught.value)
    assert result is not None and not result.ok
    status = {q.task_queue: q for q in result.queues}
    assert status[names["platform"]].ok
    assert not status[names["pipelines"]].ok
    assert "no worker answered" in (status[names["pipelines"]].error or "")
    [found] = await executions(
        temporal_env.client,
        f"WorkflowType = 'SelfCheckWorkflow' AND ExecutionStatus = 'Failed' "
        f"AND IdpStatus = 'failed' AND WorkflowId = '{workflow_id}'",
    )
    assert found.status == WorkflowExecutionStatus.FAILED


async def test_a_selfcheck_that_completed_on_a_problem_before_still_replays(
    topology: Topology,
) -> None:
    """Recorded by the code from before a problem failed the self-check (it completed, not
    ok): it replays to completion."""
    policies.install(topology)
    history = WorkflowHistory.from_json(
        "old", (HISTORIES / "selfcheck_problem_before_failing.json").read_text()
    )
    assert history.events[-1].HasField("workflow_execution_completed_event_attributes")
    await Replayer(
        workflows=[SelfCheckWorkflow],
        data_converter=data_converter(),
        workflow_runner=sandbox_runner(),
    ).replay_workflow(history)


def probe_topology(max_attempts: int) -> Topology:
    return Topology.model_validate(
        {
            "task_queues": {"platform": {}},
            "activities": {
                "default": {"start_to_close_timeout": "30s"},
                "flaky": {
                    "start_to_close_timeout": "10s",
                    "retry": {
                        "initial_interval": "100ms",
                        "maximum_interval": "200ms",
                        "maximum_attempts": max_attempts,
                    },
                },
            },
        }
    )


def probe_worker(client: Client, queue: str) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[ContextProbeWorkflow, RetryProbeWorkflow],
        activities=[whoami, flaky],
        workflow_runner=sandbox_runner(),
    )


@pytest.mark.parametrize(("max_attempts", "succeeds"), [(3, True), (2, False)])
async def test_retry_policy_comes_from_the_activity_kind(
    temporal_env: WorkflowEnvironment, max_attempts: int, succeeds: bool
) -> None:
    policies.install(probe_topology(max_attempts))
    queue = f"retry-{uuid.uuid4()}"
    async with running([probe_worker(temporal_env.client, queue)]):
        run = temporal_env.client.execute_workflow(
            RetryProbeWorkflow.run, 2, id=f"retry-{uuid.uuid4()}", task_queue=queue
        )
        if succeeds:
            assert (await run).attempt == 3
        else:
            with pytest.raises(WorkflowFailureError):
                await run


async def test_request_context_reaches_workflow_and_activity(
    temporal_env: WorkflowEnvironment,
) -> None:
    policies.install(probe_topology(1))
    queue = f"ctx-{uuid.uuid4()}"
    async with running([probe_worker(temporal_env.client, queue)]):
        with context.bound(
            request_id="req-abc", actor_label="alice@example.com", actor_type="user"
        ):
            seen = await temporal_env.client.execute_workflow(
                ContextProbeWorkflow.run, id=f"ctx-{uuid.uuid4()}", task_queue=queue
            )
        plain = await temporal_env.client.execute_workflow(
            ContextProbeWorkflow.run, id=f"ctx-{uuid.uuid4()}", task_queue=queue
        )
    assert [(s.request_id, s.actor_label) for s in seen] == [("req-abc", "alice@example.com")] * 2
    assert [(s.request_id, s.actor_label) for s in plain] == [(None, None)] * 2


async def test_schedules_are_created_updated_and_pruned(
    temporal_env: WorkflowEnvironment, topology: Topology
) -> None:
    client = temporal_env.client
    stale = f"{schedule_id('retired')}-{uuid.uuid4().hex[:6]}"
    synced = await sync_schedules(client, topology)
    assert synced == [schedule_id("selfcheck"), schedule_id("cost-collection")]
    await client.create_schedule(stale, build_schedule("retired", topology.schedules["selfcheck"]))

    described = await client.get_schedule_handle(schedule_id("selfcheck")).describe()
    action = described.schedule.action
    assert action.workflow == workflow_name(SelfCheckWorkflow)  # type: ignore[union-attr]
    assert described.schedule.spec.intervals[0].every == timedelta(minutes=15)

    changed = topology.model_copy(
        update={
            "schedules": {
                "selfcheck": topology.schedules["selfcheck"].model_copy(
                    update={"interval": timedelta(hours=1), "enabled": False}
                )
            }
        }
    )
    await sync_schedules(client, changed, prune=True)
    described = await client.get_schedule_handle(schedule_id("selfcheck")).describe()
    assert described.schedule.spec.intervals[0].every == timedelta(hours=1)
    assert described.schedule.state.paused

    remaining = [s.id async for s in await client.list_schedules()]
    assert stale not in remaining and schedule_id("selfcheck") in remaining
    await client.get_schedule_handle(schedule_id("selfcheck")).delete()


async def test_time_skipping_server_for_timers(time_skipping_env: WorkflowEnvironment) -> None:
    queue = f"sleepy-{uuid.uuid4()}"
    worker = Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[SleepyWorkflow],
        workflow_runner=sandbox_runner(),
    )
    async with worker:
        slept = await time_skipping_env.client.execute_workflow(
            SleepyWorkflow.run, 3, id=f"sleepy-{uuid.uuid4()}", task_queue=queue
        )
    assert slept >= timedelta(days=3).total_seconds()
