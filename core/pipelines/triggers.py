"""When a pipeline runs: pushes to branches, pull requests, tags, by hand, on a cron schedule.

A section that is absent never triggers; a section given empty matches everything (`**`).
Branch and tag globs are those of `core.pipelines.definition.branch_matches`."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.errors import ValidationFailed
from core.pipelines.definition import Glob, branch_matches
from core.pipelines.events import GitEvent
from core.validation import validate_model

PULL_REQUEST_ACTIONS = (
    "opened",
    "synchronize",
    "reopened",
    "closed",
    "edited",
    "ready_for_review",
    "merged",
)
DEFAULT_PULL_REQUEST_ACTIONS = ["opened", "synchronize", "reopened"]

_NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_ITEM = re.compile(r"^(\*|\w+(?:-\w+)?)(?:/(\d+))?$")


def _cron_number(text: str, index: int) -> int:
    low, high = _BOUNDS[index]
    names = _NAMES.get(index, [])
    if text.lower() in names:
        return names.index(text.lower()) + (1 if index == 3 else 0)
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{_FIELD_NAMES[index]} {text!r} is not in {low}-{high}")
    return int(text)


def check_cron(expression: str) -> str:
    """A five-field cron expression (minute hour day-of-month month day-of-week) with `*`,
    numbers, names (jan, mon), ranges, lists and steps; ValueError names the wrong field."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression!r} is not a cron expression: it needs five fields "
            "(minute hour day-of-month month day-of-week)"
        )
    for index, field in enumerate(fields):
        for item in field.split(","):
            match = _ITEM.fullmatch(item)
            if match is None or match.group(2) == "0":
                raise ValueError(f"{expression!r}: {_FIELD_NAMES[index]} {item!r} is not valid")
            if match.group(1) != "*":
                try:
                    ends = [_cron_number(p, index) for p in match.group(1).split("-")]
                except ValueError as exc:
                    raise ValueError(f"{expression!r}: {exc}") from None
                if ends != sorted(ends):
                    raise ValueError(f"{expression!r}: the range {item!r} goes backwards")
    return expression


def _action(value: str) -> str:
    if value not in PULL_REQUEST_ACTIONS:
        raise ValueError(f"{value!r} is not one of {', '.join(PULL_REQUEST_ACTIONS)}")
    return value


Cron = Annotated[str, AfterValidator(check_cron)]
Action = Annotated[str, AfterValidator(_action)]


class PushTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branches: list[Glob] = Field(default_factory=lambda: ["**"], description="Branch globs")
    tags: list[Glob] = Field(
        default_factory=list, description="Tag globs whose pushes also trigger (as `tag` does)"
    )


class PullRequestTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branches: list[Glob] = Field(default_factory=lambda: ["**"], description="Target branch globs")
    actions: list[Action] = Field(
        default_factory=lambda: list(DEFAULT_PULL_REQUEST_ACTIONS), min_length=1
    )


class TagTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patterns: list[Glob] = Field(default_factory=lambda: ["**"], description="Tag globs")


class Triggers(BaseModel):
    """Absent sections never trigger; `manual` is on unless turned off."""

    model_config = ConfigDict(extra="forbid")
    push: PushTrigger | None = None
    pull_request: PullRequestTrigger | None = None
    tag: TagTrigger | None = None
    manual: bool = True
    cron: list[Cron] = Field(default_factory=list, description="Five-field cron expressions")


def parse_triggers(data: Any) -> Triggers:
    """Validate triggers given as an object (None means the defaults: manual only).
    ValidationFailed lists every problem: `[{"field": "triggers.cron[0]", "message": ...}]`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationFailed(
            "triggers must be an object",
            details=[{"field": "triggers", "message": "expected an object"}],
        )
    return validate_model(Triggers, data, "triggers", "triggers are not valid")


def _any(value: str | None, globs: list[str]) -> bool:
    return value is not None and any(branch_matches(value, g) for g in globs)


def matches(triggers: Triggers, event: GitEvent) -> bool:
    """Whether `event` starts a run of a pipeline with these triggers. Deleting pushes and
    pings never do; a `cron` event matches when any schedule is set (the scheduler sends it
    for this pipeline's own schedules)."""
    if event.deleted:
        return False
    if event.kind == "push":
        return triggers.push is not None and _any(event.branch, triggers.push.branches)
    if event.kind == "pull_request":
        pr = triggers.pull_request
        return (
            pr is not None
            and (event.action or "") in pr.actions
            and _any(event.target_branch, pr.branches)
        )
    if event.kind == "tag":
        globs = (triggers.tag.patterns if triggers.tag else []) + (
            triggers.push.tags if triggers.push else []
        )
        return _any(event.tag, globs)
    if event.kind == "manual":
        return triggers.manual
    if event.kind == "cron":
        return bool(triggers.cron)
    return False  # ping
