"""When a pipeline runs: pushes to branches, pull requests, tags, by hand, on a cron schedule."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ValidationFailed
from core.pipelines.definition import branch_matches
from core.pipelines.events import GitEvent

_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$|^[A-Za-z,]+$")


class PushTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branches: list[str] = Field(default_factory=lambda: ["**"], description="Branch globs")


class PullRequestTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branches: list[str] = Field(default_factory=lambda: ["**"], description="Target branch globs")
    actions: list[str] = Field(default_factory=lambda: ["opened", "synchronize", "reopened"])


class TagTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patterns: list[str] = Field(default_factory=lambda: ["**"], description="Tag globs")


class Triggers(BaseModel):
    """Absent sections never trigger; `manual` is on unless turned off."""

    model_config = ConfigDict(extra="forbid")
    push: PushTrigger | None = None
    pull_request: PullRequestTrigger | None = None
    tag: TagTrigger | None = None
    manual: bool = True
    cron: list[str] = Field(default_factory=list, description="Five-field cron expressions")

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: list[str]) -> list[str]:
        for expression in value:
            fields = expression.split()
            if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
                raise ValueError(f"{expression!r} is not a five-field cron expression")
        return value


def parse_triggers(data: dict[str, Any]) -> Triggers:
    try:
        return Triggers.model_validate(data)
    except ValidationError as exc:
        details = [
            {
                "field": "triggers." + ".".join(str(p) for p in e["loc"]),
                "message": str(e["msg"]).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        first = details[0]
        raise ValidationFailed(
            f"triggers are not valid: {first['field']}: {first['message']}", details=details
        ) from None


def matches(triggers: Triggers, event: GitEvent) -> bool:
    """Whether `event` starts a run of a pipeline with these triggers."""
    if event.deleted:
        return False
    if event.kind == "push":
        return triggers.push is not None and any(
            branch_matches(event.branch or "", p) for p in triggers.push.branches
        )
    if event.kind == "pull_request":
        pr = triggers.pull_request
        return (
            pr is not None
            and (event.action or "") in pr.actions
            and any(branch_matches(event.target_branch or "", p) for p in pr.branches)
        )
    if event.kind == "tag":
        return triggers.tag is not None and any(
            branch_matches(event.tag or "", p) for p in triggers.tag.patterns
        )
    if event.kind == "manual":
        return triggers.manual
    if event.kind == "cron":
        return bool(triggers.cron)
    return False  # ping
