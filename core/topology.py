"""The Temporal topology from temporal.yaml: namespace, task queues, activity kinds, schedules.

Loaded into a strict model: an unknown key or a bad value is a one-line `ConfigError` naming
the key, so `idp` exits with status 2 before anything starts.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator
from temporalio.common import RetryPolicy

from core.durations import Duration
from core.errors import ConfigError

_NAME = r"^[a-z][a-z0-9-]{0,62}$"
_IDENT = r"^[a-z][a-z0-9_]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskQueue(_Strict):
    """One task queue and how much one worker process runs from it at once."""

    description: str = ""
    max_concurrent_workflow_tasks: PositiveInt = 100
    max_concurrent_activities: PositiveInt = 100


class Retry(_Strict):
    initial_interval: Duration = timedelta(seconds=1)
    backoff_coefficient: float = Field(2.0, ge=1.0)
    maximum_interval: Duration | None = None
    maximum_attempts: int = Field(0, ge=0, description="0 means no limit")
    non_retryable_error_types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Retry:
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("maximum_interval is shorter than initial_interval")
        return self

    def to_temporal(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=self.initial_interval,
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=self.maximum_interval,
            maximum_attempts=self.maximum_attempts,
            non_retryable_error_types=self.non_retryable_error_types or None,
        )


class ActivityKind(_Strict):
    """Timeouts and retry policy shared by every activity of one kind (db, git, slack...)."""

    start_to_close_timeout: Duration
    schedule_to_close_timeout: Duration | None = None
    heartbeat_timeout: Duration | None = None
    retry: Retry = Field(default_factory=Retry)


class Schedule(_Strict):
    """A Temporal Schedule the workers keep in sync (id `idp-<name>`)."""

    workflow: str
    task_queue: str
    cron: str | None = None
    interval: Duration | None = None
    input: dict[str, Any] | None = None
    enabled: bool = True
    overlap: Literal["skip", "buffer_one", "buffer_all", "cancel_other", "allow_all"] = "skip"
    note: str = ""

    @model_validator(mode="after")
    def _one_spec(self) -> Schedule:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of cron or interval")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} must have five fields (min hour dom month dow)")
        if self.interval is not None and self.interval < timedelta(seconds=1):
            raise ValueError("interval must be at least 1s")
        return self


class Topology(_Strict):
    namespace: str = "default"
    task_queues: dict[str, TaskQueue] = Field(min_length=1)
    activities: dict[str, ActivityKind]
    schedules: dict[str, Schedule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> Topology:
        for name in self.task_queues:
            if not re.match(_NAME, name):
                raise ValueError(f"task queue name {name!r} must match {_NAME}")
        for name in self.activities:
            if not re.match(_IDENT, name):
                raise ValueError(f"activity kind {name!r} must match {_IDENT}")
        if "default" not in self.activities:
            raise ValueError("activities must define a 'default' kind")
        for name, schedule in self.schedules.items():
            if not re.match(_NAME, name):
                raise ValueError(f"schedule name {name!r} must match {_NAME}")
            if schedule.task_queue not in self.task_queues:
                raise ValueError(
                    f"schedules.{name}.task_queue: {schedule.task_queue!r} is not a declared "
                    f"task queue ({', '.join(sorted(self.task_queues))})"
                )
        return self

    def activity(self, kind: str) -> ActivityKind:
        try:
            return self.activities[kind]
        except KeyError:
            raise KeyError(f"activity kind {kind!r} is not in temporal.yaml") from None


def load_topology(path: Path) -> Topology:
    """Read and validate temporal.yaml; raise ConfigError with one line naming the bad key."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {where}{problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
    return f"{key}: {msg}{shown}" if key else msg
