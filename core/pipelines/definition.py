"""The pipeline definition: stages run in order; a stage's steps run one after another, or all
at once when the stage is `parallel`. Each problem in a definition is reported with its field
path and, for YAML, its line, so an author can fix everything in one go."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.durations import parse_duration
from core.errors import ValidationFailed

DEFINITION_PATH = ".idp/pipeline.yaml"
DEFAULT_TIMEOUT = timedelta(minutes=30)
MAX_TIMEOUT = timedelta(hours=6)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def branch_matches(branch: str, pattern: str) -> bool:
    """Glob match of a branch: `*` stays within one path segment, `**` crosses `/`."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.fullmatch(regex, branch) is not None


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be 1 to 63 lower-case letters, digits, - or _")
    return value


def _env(value: dict[str, str]) -> dict[str, str]:
    wrong = [k for k in value if not _ENV_NAME.fullmatch(k)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: not an environment variable name")
    return value


class When(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branches: list[str] = Field(min_length=1, description="Globs; * within a segment, ** across")

    def applies_to(self, branch: str | None) -> bool:
        return branch is not None and any(branch_matches(branch, p) for p in self.branches)


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    path: str = Field(description="Relative to the workspace; a file, a directory or a glob")
    type: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value)

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value or value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a path inside the workspace (relative, without ..)")
        return value


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    run: str = Field(min_length=1, description="Shell commands, run with sh -e")
    env: dict[str, str] = Field(default_factory=dict)
    timeout: timedelta = DEFAULT_TIMEOUT
    image: str | None = Field(None, description="Container image (docker and kubernetes runners)")
    when: When | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    continue_on_error: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value)

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        return _env(value)

    @field_validator("timeout", mode="before")
    @classmethod
    def _check_timeout(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if not timedelta(0) < duration <= MAX_TIMEOUT:
            raise ValueError("must be more than 0 and at most 6h")
        return duration

    def applies_to(self, branch: str | None) -> bool:
        return self.when is None or self.when.applies_to(branch)


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parallel: bool = Field(False, description="Run the stage's steps at once")
    when: When | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value)

    @model_validator(mode="after")
    def _unique_steps(self) -> Stage:
        names = [s.name for s in self.steps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"step names must be unique in a stage: {', '.join(twice)}")
        return self

    def applies_to(self, branch: str | None) -> bool:
        return self.when is None or self.when.applies_to(branch)


class PipelineDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    stages: list[Stage] = Field(min_length=1)

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        return _env(value)

    @model_validator(mode="after")
    def _unique_stages(self) -> PipelineDefinition:
        names = [s.name for s in self.stages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stage names must be unique: {', '.join(twice)}")
        return self


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "definition"


def _lines(
    node: yaml.Node, path: tuple[int | str, ...], out: dict[tuple[int | str, ...], int]
) -> None:
    """The 1-based line of every mapping key and sequence item, by its path."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            out[child] = key.start_mark.line + 1
            _lines(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _line_of(loc: tuple[int | str, ...], lines: dict[tuple[int | str, ...], int]) -> int | None:
    for end in range(len(loc), -1, -1):  # the nearest enclosing place that exists
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _validate(data: Any, lines: dict[tuple[int | str, ...], int] | None) -> PipelineDefinition:
    try:
        return PipelineDefinition.model_validate(data)
    except ValidationError as exc:
        details = []
        for error in exc.errors():
            loc = tuple(
                p for p in error["loc"] if not isinstance(p, str) or not p.startswith("function")
            )
            message = str(error["msg"]).removeprefix("Value error, ")
            detail: dict[str, Any] = {"field": _field(loc), "message": message}
            if lines is not None:
                detail["line"] = _line_of(loc, lines)
            details.append(detail)
        first = details[0]
        where = f" (line {first['line']})" if first.get("line") else ""
        raise ValidationFailed(
            f"the pipeline definition is not valid: {first['field']}{where}: {first['message']}",
            details=details,
        ) from None


def parse_definition(text: str) -> PipelineDefinition:
    """Parse and validate pipeline YAML; ValidationFailed lists every problem with its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        where = f" at line {line}, column {mark.column + 1}" if mark else ""
        message = (
            f"the pipeline definition is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        )
        raise ValidationFailed(
            message, details=[{"field": "definition", "line": line, "message": message}]
        ) from None
    if not isinstance(data, dict) or node is None:
        raise ValidationFailed(
            "the pipeline definition must be a mapping with stages",
            details=[{"field": "definition", "line": 1, "message": "expected a mapping"}],
        )
    lines: dict[tuple[int | str, ...], int] = {}
    _lines(node, (), lines)
    return _validate(data, lines)


def definition_from_json(data: dict[str, Any]) -> PipelineDefinition:
    """Validate a definition given as an object (no lines to name)."""
    return _validate(data, None)
