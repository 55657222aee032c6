"""Workflows and activities used only by the tests (kept in their own module so the workflow
sandbox imports nothing from pytest)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from core import context
    from core.temporal.policies import activity_options


@dataclass
class Seen:
    request_id: str | None
    actor_label: str | None
    attempt: int


@activity.defn(name="tests.whoami")
async def whoami() -> Seen:
    ctx = context.current()
    return Seen(ctx.request_id, ctx.actor_label, activity.info().attempt)


@activity.defn(name="tests.flaky")
async def flaky(failures: int) -> Seen:
    """Fails the first `failures` attempts."""
    if activity.info().attempt <= failures:
        raise RuntimeError(f"attempt {activity.info().attempt} fails on purpose")
    return await whoami()


@workflow.defn
class ContextProbeWorkflow:
    @workflow.run
    async def run(self) -> list[Seen]:
        in_workflow = context.current()
        from_activity = await workflow.execute_activity(whoami, **activity_options("default"))
        return [Seen(in_workflow.request_id, in_workflow.actor_label, 0), from_activity]


@workflow.defn
class RetryProbeWorkflow:
    @workflow.run
    async def run(self, failures: int) -> Seen:
        return await workflow.execute_activity(flaky, failures, **activity_options("flaky"))


@workflow.defn
class SleepyWorkflow:
    @workflow.run
    async def run(self, days: int) -> float:
        started = workflow.now()
        await workflow.sleep(timedelta(days=days))
        return (workflow.now() - started).total_seconds()
