"""What every step runner speaks: a step to run, the log lines it produces, how it ended.

Plain asyncio and pydantic; the activity layer wraps a runner in a Temporal activity (the
heartbeat callback becomes `activity.heartbeat`, a cancelled activity raises
`asyncio.CancelledError` into `Runner.run`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

StepStatus = Literal["succeeded", "failed", "timed_out", "cancelled"]
# The uid (and gid) steps run as in the sandbox and in containers: `nobody`, never root.
DEFAULT_STEP_UID = 65534
Stream = Literal["stdout", "stderr"]


class StepSpec(BaseModel):
    """One step as a runner sees it. `env` is the whole environment the step adds to the
    runner's minimal base: the worker's own environment is never inherited."""

    model_config = ConfigDict(frozen=True)

    step_id: str
    command: str = Field(description="Shell commands, run with `sh -e -c`")
    env: dict[str, str] = Field(default_factory=dict)
    workdir: Path
    timeout: float = Field(gt=0, description="Seconds before the step is killed")
    image: str | None = Field(None, description="Container image; ignored by the local runner")
    network: bool = Field(
        False, description="Network access (sandbox runner; without it the step has none)"
    )


class RunnerUnavailable(RuntimeError):
    """Where steps run cannot be used now (the Docker engine or Kubernetes API unreachable,
    not configured, refusing the runner): the step did not run, and may be retried."""


class LogLine(BaseModel):
    """One line of output, without its line ending. `seq` increases by one per line across
    both streams of a step, in the order the runner read them."""

    seq: int
    at: datetime
    stream: Stream
    text: str


class StepOutcome(BaseModel):
    exit_code: int | None
    status: StepStatus
    duration_seconds: float
    error: str | None = None


OutputSink = Callable[[list[LogLine]], Awaitable[None]]
Heartbeat = Callable[[], None]


class Runner(Protocol):
    async def run(
        self,
        spec: StepSpec,
        on_output: OutputSink,
        *,
        heartbeat: Heartbeat | None = None,
    ) -> StepOutcome:
        """Run one step to its end. Output reaches `on_output` in batches as it is produced
        (within a second); `heartbeat` is called every few seconds while the step runs.
        A cancelled `run` kills what the step started, then re-raises CancelledError."""
        ...
