"""Step runners: where a pipeline step's command runs. `sandbox` (a bubblewrap sandbox on the
worker) is the embedded default, `local` (an unsandboxed subprocess) the development fallback;
docker and kubernetes runners implement the same `Runner`."""

from core.pipelines.runners.base import (
    Heartbeat,
    LogLine,
    OutputSink,
    Runner,
    RunnerUnavailable,
    StepOutcome,
    StepSpec,
    StepStatus,
)
from core.pipelines.runners.local import LocalRunner
from core.pipelines.runners.sandbox import SandboxRunner

__all__ = [
    "Heartbeat",
    "LocalRunner",
    "LogLine",
    "OutputSink",
    "Runner",
    "RunnerUnavailable",
    "SandboxRunner",
    "StepOutcome",
    "StepSpec",
    "StepStatus",
]
