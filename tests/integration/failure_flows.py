"""Activities that fail the ways the platform's do, and a workflow that runs one of them once
(kept apart from the tests so the workflow sandbox imports nothing from pytest)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.errors import Conflict
    from core.infrastructure.engine import INSTALL_HINT
    from core.infrastructure.provision_messages import PULUMI_MISSING


@activity.defn(name="tests.pulumi_missing")
async def pulumi_missing() -> None:
    """As activities/provisioning.py reports a worker without the Pulumi CLI."""
    raise ApplicationError(
        INSTALL_HINT.format(host="worker-1"), type=PULUMI_MISSING, non_retryable=True
    )


@activity.defn(name="tests.conflict")
async def conflict() -> None:
    raise Conflict("environment 'prod' is locked by another promotion")


@activity.defn(name="tests.bug")
async def bug() -> None:
    return {}["missing"]  # type: ignore[no-any-return]  # a KeyError: a bug


@workflow.defn
class FailOnceWorkflow:
    @workflow.run
    async def run(self, activity_name: str) -> str:
        try:
            await workflow.execute_activity(
                activity_name,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError as err:
            return str(err.cause)
        return "succeeded"
