"""A fork's pull request does not run until someone who may run the pipeline approves it, and it
follows the definition on the base repository's target branch (issue 15, finding 1).

The attack: an outsider opens a pull request from a fork whose `.idp/pipeline.yaml` runs
what they like. Now the run waits in `awaiting_approval` with no step run; a viewer (or an
Update sent to Temporal directly naming the viewer) cannot let it go; an approver can, and
the steps then run on the fork's commit as the target branch's definition says."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from core.models.audit import AuditLog
from core.pipelines.run_messages import APPROVE_UPDATE, ApprovalRequest
from core.temporal import search_attributes as sa
from core.temporal.converter import data_converter
from tests.helpers import wait_until
from tests.integration.identity_helpers import assert_error
from tests.integration.pipeline_helpers import (
    Stack,
    current_details,
    pipelines_worker,
    until_listed,
)
from tests.security.pipeline_attack_helpers import (
    ForkedRepo,
    deliver_pull_request,
    forked,
    pull_request_payload,
    stack,
)
from workers.runner import sandbox_runner
from workflows.pipeline_run import PipelineRunWorkflow

__all__ = ["forked", "stack"]  # fixtures

HISTORIES = Path(__file__).parent.parent / "fixtures" / "histories"
BASE = """\
stages:
  - name: s
    steps:
      - name: a
        run: 'echo base-definition; cat payload.txt'
"""
FORKED = """\
stages:
  - name: s
    steps:
      - name: a
        run: 'echo fork-definition; env'
"""


async def _awaiting(stack: Stack, run_id: str) -> dict[str, object]:
    async def waiting() -> bool:
        run = await stack.run(run_id)
        return run["phase"] == "awaiting approval"

    await wait_until(f"run {run_id} awaiting approval", waiting, timeout=30)
    return await stack.run(run_id)


async def test_a_fork_pull_request_waits_for_approval_and_runs_the_target_branchs_definition(
    stack: Stack, forked: ForkedRepo
) -> None:
    forked.init({".idp/pipeline.yaml": BASE, "payload.txt": "payload-on-main\n"})
    fork_sha = forked.fork_pull_request(
        7, {".idp/pipeline.yaml": FORKED, "payload.txt": "payload-from-fork\n"}
    )
    service = await stack.service(forked.url)
    pipeline = await stack.pipeline(
        service["id"], source="repository", triggers={"pull_request": {"branches": ["main"]}}
    )
    _, viewer = await stack.api.token("viewer")
    approver_id, approver = await stack.api.token("developer")
    async with pipelines_worker(stack.client, stack.settings):
        started = await deliver_pull_request(stack, pull_request_payload(forked, 7, fork_sha))
        run = await _awaiting(stack, started["id"])
        assert run["status"] == "awaiting_approval" and run["from_fork"] is True
        assert run["stages"] == [] and run["git_sha"] == fork_sha  # nothing planned, nothing ran
        assert "approve" in str(run["waiting_reason"])
        waiting = await stack.api.client.get(
            "/pipelines/runs",
            params={"pipeline_id": pipeline["id"], "status": "awaiting_approval"},
            headers=stack.admin,
        )
        assert [r["id"] for r in waiting.json()["items"]] == [run["id"]]
        # What an operator finds in the Temporal UI: what waits for approval, and why.
        workflow_id = str(run["workflow_id"])
        await until_listed(
            stack.client,
            f'IdpPipeline = "{pipeline["name"]}" AND IdpStatus = "awaiting_approval"',
            workflow_id,
        )
        assert (await current_details(stack.client, workflow_id)).startswith(
            "waiting for approval of fork pull request #7"
        )
        summary = await (
            await stack.client.get_workflow_handle(workflow_id).describe()
        ).static_summary()
        assert summary is not None and "pull request #7 from a fork by " in summary

        # A viewer is refused by the API…
        refused = await stack.api.client.post(
            f"/pipelines/runs/{run['id']}/approve", headers=viewer
        )
        assert_error(refused, 403, "forbidden")
        # …and an Update sent to Temporal directly, naming a viewer, by the workflow itself.
        viewer_id, _ = await stack.api.user("viewer")
        handle = stack.client.get_workflow_handle(str(run["workflow_id"]))
        try:
            await handle.execute_update(APPROVE_UPDATE, ApprovalRequest(user_id=viewer_id))
        except WorkflowUpdateFailedError as exc:
            assert isinstance(exc.cause, ApplicationError) and exc.cause.type == "Forbidden"
            assert "pipelines:run" in exc.cause.message
        else:
            raise AssertionError("the forged approval was accepted")
        still = await stack.run(str(run["id"]))
        assert still["status"] == "awaiting_approval" and still["stages"] == []

        approved = await stack.api.client.post(
            f"/pipelines/runs/{run['id']}/approve", headers=approver
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["approved_by"] and approved.json()["approved_at"]
        again = await stack.api.client.post(
            f"/pipelines/runs/{run['id']}/approve", headers=approver
        )
        assert_error(again, 409, "conflict")
        done = await stack.settled(await stack.finished(str(run["id"])))

    assert done["status"] == "succeeded", done
    assert done["git_sha"] == fork_sha  # the steps ran on the fork's commit…
    logs = await stack.logs(done["id"])
    assert "s/a | base-definition" in logs and "payload-from-fork" in logs
    assert "fork-definition" not in logs  # …as the target branch's definition says
    audit = await stack.api.fetch(
        select(AuditLog).where(
            AuditLog.resource_id == done["id"], AuditLog.action == "pipeline_run.approve"
        )
    )
    assert [a.actor_id for a in audit] == [approver_id]

    # The histories replay: this run's, and one recorded before approvals were added.
    replayer = Replayer(
        workflows=[PipelineRunWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=stack.client.data_converter,
    )
    await replayer.replay_workflow(
        await stack.client.get_workflow_handle(done["workflow_id"]).fetch_history()
    )
    old = HISTORIES / "pipeline_run_before_fork_approval.json"
    history = WorkflowHistory.from_json("pipeline-run-old", old.read_text())
    await Replayer(
        workflows=[PipelineRunWorkflow],
        workflow_runner=sandbox_runner(),
        data_converter=data_converter(),  # the recorded payloads are decrypted
    ).replay_workflow(history)


async def test_a_rejected_or_cancelled_fork_run_runs_nothing_and_same_repo_prs_run(
    stack: Stack, forked: ForkedRepo
) -> None:
    forked.init({".idp/pipeline.yaml": BASE, "payload.txt": "main\n"})
    first = forked.fork_pull_request(1, {"payload.txt": "one\n"})
    second = forked.fork_pull_request(2, {"payload.txt": "two\n"})
    service = await stack.service(forked.url)
    await stack.pipeline(
        service["id"], source="repository", triggers={"pull_request": {"branches": ["main"]}}
    )
    _, approver = await stack.api.token("developer")
    async with pipelines_worker(stack.client, stack.settings):
        rejected = await deliver_pull_request(stack, pull_request_payload(forked, 1, first))
        await _awaiting(stack, rejected["id"])
        answer = await stack.api.client.post(
            f"/pipelines/runs/{rejected['id']}/reject", headers=approver
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "cancelled"
        cancelled = await deliver_pull_request(stack, pull_request_payload(forked, 2, second))
        await _awaiting(stack, cancelled["id"])
        stop = await stack.api.client.post(
            f"/pipelines/runs/{cancelled['id']}/cancel", headers=approver
        )
        assert stop.status_code == 200, stop.text
        ends = [await stack.settled(await stack.finished(r["id"])) for r in (rejected, cancelled)]
        # A pull request from a branch of the repository itself is not held.
        own = await deliver_pull_request(stack, pull_request_payload(forked, 3, first, fork=False))
        own_run = await stack.finished(own["id"])

    assert [e["status"] for e in ends] == ["cancelled", "cancelled"]
    assert ends[0]["error"].startswith("rejected by ")
    # A rejection is the user's decision: the workflow completes, cancelled as recorded.
    rejected_run = await stack.client.get_workflow_handle(ends[0]["workflow_id"]).describe()
    assert rejected_run.status == WorkflowExecutionStatus.COMPLETED
    assert rejected_run.typed_search_attributes.get(sa.STATUS) == "cancelled"
    assert all(e["stages"] == [] for e in ends)  # nothing planned, nothing ran
    for e in ends:
        assert await stack.logs(e["id"]) == ""
    assert own_run["status"] == "succeeded" and own_run["from_fork"] is False
    unknown = await stack.api.client.post(
        f"/pipelines/runs/{uuid.uuid4()}/approve", headers=approver
    )
    assert_error(unknown, 404)
