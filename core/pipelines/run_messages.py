"""What PipelineRunWorkflow takes and returns, and what passes between it and its activities.

Only ids, the plan and statuses travel through Temporal: log lines go straight from the step
activity to the database, and tokens stay in the worker's settings."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.pipelines.artifacts import ArtifactDecl

RunStatus = Literal["awaiting_approval", "queued", "running", "succeeded", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = (
    "awaiting_approval",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
StageStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled", "reused"]
StepStatus = Literal[
    "pending", "running", "succeeded", "failed", "timed_out", "skipped", "cancelled", "reused"
]
FINISHED_RUN_STATUSES = ("succeeded", "failed", "cancelled")
WAKE_SIGNAL = "wake"
APPROVE_UPDATE = "approve"

# ApplicationError types of the pipeline activities. The run's own input at fault: the run is
# recorded failed and its workflow completes (the user's work failed).
RUN_INVALID = "PipelineError"
"""Its definition (missing, invalid) or a commit a manual run may not use."""
UNKNOWN_REVISION = "UnknownRevision"
"""The repository has no such branch, tag or commit (retried: a push may be mirrored late)."""
RUN_FAULTS = (RUN_INVALID, UNKNOWN_REVISION)
# The platform could not do its job (after the activity's retries): the run is recorded
# failed and its workflow fails with one of these types (docs/architecture.md, failures).
GIT_CHECKOUT_FAILED = "GitCheckoutFailed"
"""The Git host (or mirror) could not be read: clone, fetch or a file at a ref."""
REPOSITORY_NOT_BOUND = "RepositoryNotBound"
"""The service has no repository, or its organization holds no binding for it."""
RUNNER_UNAVAILABLE = "RunnerUnavailable"
"""Where steps run (sandbox, Docker engine, Kubernetes API) could not run the step."""
STEP_NOT_RUN = "PipelineStepNotRun"
"""A step's activity failed for another reason (its worker lost, its logs not stored)."""
RECORD_FAILED = "PipelineRecordFailed"
"""The run's progress could not be recorded (the database)."""


class RunInput(BaseModel):
    """A run's workflow input. A schedule (a `cron` trigger) gives the pipeline instead of a
    run: the run is recorded when the workflow starts."""

    run_id: uuid.UUID | None = None
    pipeline_id: uuid.UUID | None = None
    notifications_queue: str = "notifications"
    rerun_from_stage: str | None = Field(None, description="A re-run: reuse the stages before")
    needs_approval: bool = Field(
        False, description="A fork's pull request: wait for the `approve` Update first"
    )
    pull_request: int | None = Field(None, description="The pull request's number, if any")


class RunContext(BaseModel):
    """Everything about a run the workflow needs, read once when the run is admitted."""

    run_id: uuid.UUID
    number: int
    pipeline_id: uuid.UUID
    pipeline: str
    service: str
    team_id: uuid.UUID
    organization: str | None = Field(None, description="The organization's slug")
    team: str | None = Field(None, description="The owner team's slug")
    channel_ids: list[uuid.UUID] = Field(default_factory=list)
    repository_url: str | None = None
    host_kind: str | None = None
    source: str = "inline"
    config: dict[str, Any] | None = Field(None, description="The definition, when already known")
    ref: str | None = None
    sha: str | None = None
    branch: str | None = None
    trigger_type: str
    triggered_by: str | None = None
    run_url: str
    rerun_of_id: uuid.UUID | None = None
    rerun_from_stage: str | None = None
    from_fork: bool = Field(False, description="Definition from the target branch, no secrets")
    target_branch: str | None = Field(None, description="A pull request's target branch")


class Admission(BaseModel):
    """`pipelines.admit`: whether the run may start now (the pipeline's concurrency limit),
    and the older runs of the same branch it supersedes."""

    admitted: bool
    reason: str | None = None
    context: RunContext | None = None
    superseded: list[str] = Field(default_factory=list, description="Workflow ids to cancel")
    gone: bool = Field(False, description="The run or its pipeline no longer exists")


class ApprovalRequest(BaseModel):
    """The `approve` Update: who asks (as the API authenticated them) and what they decide.
    Nothing here is trusted: `pipelines.decide` reads the user's grants (and the API key's
    permissions) again before it records anything."""

    user_id: uuid.UUID
    key_id: uuid.UUID | None = None
    decision: Literal["approve", "reject"] = "approve"


class DecideInput(BaseModel):
    run_id: uuid.UUID
    request: ApprovalRequest


class ApprovalResult(BaseModel):
    """What `pipelines.decide` recorded: the run's status now, and by whom."""

    status: RunStatus
    decided_by: str


class PlannedStep(BaseModel):
    step_id: uuid.UUID
    name: str
    command: str
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float
    image: str | None = None
    network: bool = False
    artifacts: list[ArtifactDecl] = Field(default_factory=list)
    continue_on_error: bool = False
    status: StepStatus = "pending"


class PlannedStage(BaseModel):
    stage_id: uuid.UUID
    name: str
    parallel: bool = False
    status: StageStatus = "pending"
    steps: list[PlannedStep]


class RunRef(BaseModel):
    run_id: uuid.UUID


class CheckoutInput(BaseModel):
    context: RunContext


class Plan(BaseModel):
    """`pipelines.checkout`: the commit checked out and the stages to run (rows written)."""

    sha: str
    subject: str | None = None
    stages: list[PlannedStage]


class StepInput(BaseModel):
    run_id: uuid.UUID
    step: PlannedStep
    stage: str
    stage_id: uuid.UUID
    repository_url: str | None
    host_kind: str | None = None
    sha: str


class StepResult(BaseModel):
    status: StepStatus
    exit_code: int | None = None
    error: str | None = None
    duration_seconds: float = 0.0
    artifacts: int = 0


class StageUpdate(BaseModel):
    stage_id: uuid.UUID
    status: StageStatus
    skip_rest: bool = Field(False, description="Also mark this stage's pending steps skipped")


class FinishInput(BaseModel):
    run_id: uuid.UUID
    status: RunStatus
    error: str | None = None


class FinishResult(BaseModel):
    duration_seconds: float | None = None
    waiting: list[str] = Field(default_factory=list, description="Queued runs to wake")


class StatusReport(BaseModel):
    run_id: uuid.UUID
    state: Literal["pending", "success", "failure", "error"]
    description: str


class RunView(BaseModel):
    """The workflow's `state` query: what it is doing now."""

    run_id: uuid.UUID
    status: RunStatus
    phase: str = Field(description="waiting, checking out, running <stage>, finishing, done")
    waiting_reason: str | None = None
    stages: list[PlannedStage] = Field(default_factory=list)
    error: str | None = None
