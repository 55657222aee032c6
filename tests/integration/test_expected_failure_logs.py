"""A worker's log shows an expected activity failure (an ApplicationError the platform raises
on purpose, such as PulumiCliMissing, or an AppError) as one line, and a bug with its
traceback; on a real Temporal server, through the logging every idp process configures."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.logging import configure_logging
from tests.integration.failure_flows import FailOnceWorkflow, bug, conflict, pulumi_missing

QUEUE = "expected-failure-logs"


@pytest.fixture
def process_log() -> Iterator[io.StringIO]:
    """What `configure_logging` (as `idp worker` calls it) writes, then the test run's logging
    back as it was."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    sdk = logging.getLogger("temporalio")
    activity_logger = logging.getLogger("temporalio.activity")
    saved_sdk = (sdk.level, activity_logger.filters[:])
    configure_logging("INFO", "text")
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    written = io.StringIO()
    handler.setStream(written)  # instead of stderr
    try:
        yield written
    finally:
        root.handlers[:], root.level = saved
        sdk.level, activity_logger.filters[:] = saved_sdk


async def run_once(env: WorkflowEnvironment, activity_name: str) -> tuple[str, str]:
    workflow_id = f"fail-once-{activity_name}-{uuid.uuid4().hex[:8]}"
    result = await env.client.execute_workflow(
        FailOnceWorkflow.run, activity_name, id=workflow_id, task_queue=QUEUE
    )
    return workflow_id, result


async def test_expected_failures_are_one_line_and_bugs_keep_their_traceback(
    temporal_env: WorkflowEnvironment, process_log: io.StringIO
) -> None:
    async with Worker(
        temporal_env.client,
        task_queue=QUEUE,
        workflows=[FailOnceWorkflow],
        activities=[pulumi_missing, conflict, bug],
    ):
        missing_id, missing = await run_once(temporal_env, "tests.pulumi_missing")
        conflict_id, _ = await run_once(temporal_env, "tests.conflict")
        bug_id, _ = await run_once(temporal_env, "tests.bug")
    assert "the Pulumi CLI is not installed on this worker (worker-1)" in missing
    log = process_log.getvalue()
    lines = log.splitlines()

    (pulumi_line,) = [line for line in lines if missing_id in line]
    assert " WARNING temporalio.activity " in pulumi_line
    assert (
        f"activity tests.pulumi_missing failed in workflow {missing_id} (attempt 1, not "
        "retried): PulumiCliMissing: the Pulumi CLI is not installed on this worker (worker-1)"
    ) in pulumi_line

    (conflict_line,) = [line for line in lines if conflict_id in line]
    assert (
        f"activity tests.conflict failed in workflow {conflict_id} (attempt 1, may be "
        "retried): Conflict: environment 'prod' is locked by another promotion"
    ) in conflict_line

    # The bug: the SDK's own record, with the traceback that shows where it happened.
    bug_at = next(i for i, line in enumerate(lines) if bug_id in line)
    assert "Completing activity as failed" in lines[bug_at]
    assert lines[bug_at + 1] == "Traceback (most recent call last):"
    assert "KeyError: 'missing'" in log
    assert log.count("Traceback") == 1
