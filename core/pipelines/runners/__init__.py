"""Step runners: where a pipeline step's command runs. `local` (a subprocess on the worker)
is the embedded default; docker and kubernetes runners implement the same `Runner`."""

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

__all__ = [
    "Heartbeat",
    "LocalRunner",
    "LogLine",
    "OutputSink",
    "Runner",
    "RunnerUnavailable",
    "StepOutcome",
    "StepSpec",
    "StepStatus",
]
