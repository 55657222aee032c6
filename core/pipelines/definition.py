"""The pipeline definition: stages run in order; a stage's steps run one after another, or all
at once when the stage is `parallel`. Each problem in a definition is reported with its field
path and, for YAML, its line, so an author can fix everything in one go."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core import bounded_yaml
from core.durations import Duration, parse_duration
from core.errors import ValidationFailed

DEFINITION_PATH = ".idp/pipeline.yaml"
DEFAULT_TIMEOUT = timedelta(minutes=30)
MAX_TIMEOUT = timedelta(hours=6)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def branch_matches(branch: str, pattern: str) -> bool:
    """Glob match of a branch or tag: `*` and `?` stay within one path segment, `**` crosses
    `/` (and `**/` also matches no directory at all, so `**/fix` matches `fix`)."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
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


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def _env_value(value: Any) -> Any:
    """YAML reads `PORT: 8080` and `DEBUG: true` as a number and a boolean; a shell gets text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _glob(value: str) -> str:
    if not value.strip():
        raise ValueError("a glob cannot be empty")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]
Env = dict[EnvName, EnvValue]
Glob = Annotated[str, AfterValidator(_glob)]


def _unique(items: list[Any], what: str) -> None:
    names = [item.name for item in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PydanticCustomError(
            "duplicate_name",
            "{what} names must be unique: {names}",
            {"what": what, "names": ", ".join(twice)},
        )


class When(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branches: list[Glob] = Field(min_length=1, description="Globs; * within a segment, ** across")

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
        parts = value.replace("\\", "/").split("/")
        if not value.strip() or value.startswith(("/", "\\", "~")) or ".." in parts:
            raise ValueError("must be a path inside the workspace (relative, without ..)")
        if re.match(r"^[A-Za-z]:", value):
            raise ValueError("must be a path inside the workspace (relative, without ..)")
        return value


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    run: str = Field(min_length=1, description="Shell commands, run with sh -e")
    env: Env = Field(default_factory=dict)
    timeout: Duration = DEFAULT_TIMEOUT
    image: str | None = Field(
        None, min_length=1, description="Container image (docker and kubernetes runners)"
    )
    when: When | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    continue_on_error: bool = False
    network: bool | None = Field(
        None, description="Network access in the sandbox; unset: the pipeline's `network`"
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value)

    @field_validator("timeout", mode="before")
    @classmethod
    def _check_timeout(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if not timedelta(0) < duration <= MAX_TIMEOUT:
            raise ValueError("must be more than 0 and at most 6h")
        return duration

    @model_validator(mode="after")
    def _unique_artifacts(self) -> Step:
        _unique(self.artifacts, "artifact")
        return self

    def applies_to(self, branch: str | None) -> bool:
        """Whether the step runs on `branch` (always, without a `when`)."""
        return self.when is None or self.when.applies_to(branch)

    def matches_branch(self, branch: str | None) -> bool:
        return self.applies_to(branch)


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
        _unique(self.steps, "step")
        return self

    def applies_to(self, branch: str | None) -> bool:
        """Whether the stage runs on `branch` (always, without a `when`)."""
        return self.when is None or self.when.applies_to(branch)

    def matches_branch(self, branch: str | None) -> bool:
        return self.applies_to(branch)


class PipelineDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    env: Env = Field(default_factory=dict)
    network: bool = Field(False, description="Network access for every step (sandbox runner)")
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_stages(self) -> PipelineDefinition:
        _unique(self.stages, "stage")
        return self


Loc = tuple[int | str, ...]


def _field(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "definition"


def _lines(node: yaml.Node, path: Loc, out: dict[Loc, int], duplicates: list[Loc]) -> None:
    """The 1-based line of every mapping key and sequence item, by its path; keys given twice
    in one mapping (which YAML loaders silently resolve to the last) go to `duplicates`."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            child = (*path, str(key.value))
            if child[-1] in seen:
                duplicates.append(child)
            seen.add(str(key.value))
            out[child] = key.start_mark.line + 1
            _lines(value, child, out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out, duplicates)


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    for end in range(len(loc), -1, -1):  # the nearest enclosing place that exists
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _duplicate_names(data: Any) -> list[tuple[Loc, str]]:
    """Each stage (and step, and artifact) whose name an earlier sibling already has."""
    found: list[tuple[Loc, str]] = []

    def walk(items: Any, path: Loc, what: str, inner: tuple[str, str] | None) -> None:
        if not isinstance(items, list):
            return
        seen: set[Any] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            name = item.get("name")
            if isinstance(name, str) and name in seen:
                found.append(((*path, i, "name"), f"{what} name {name!r} is already used"))
            seen.add(name)
            if inner:
                key, inner_what = inner
                nxt = ("artifacts", "artifact") if key == "steps" else None
                walk(item.get(key), (*path, i, key), inner_what, nxt)

    if isinstance(data, dict):
        walk(data.get("stages"), ("stages",), "stage", ("steps", "step"))
    return found


def _problems(data: Any) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    duplicates = _duplicate_names(data)
    try:
        PipelineDefinition.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] == "duplicate_name" and duplicates:
                continue  # reported below, at the name given twice
            loc = tuple(
                p
                for p in error["loc"]
                if p != "[key]" and not (isinstance(p, str) and p.startswith("function"))
            )
            problems.append((loc, str(error["msg"]).removeprefix("Value error, ")))
    return problems + duplicates


def _fail(problems: list[tuple[Loc, str]], lines: dict[Loc, int] | None) -> ValidationFailed:
    details = []
    for loc, message in problems:
        detail: dict[str, Any] = {"field": _field(loc), "message": message}
        if lines is not None:
            detail["line"] = _line_of(loc, lines)
        details.append(detail)
    if lines is not None:
        details.sort(key=lambda d: d["line"] or 0)
    first = details[0]
    where = f" (line {first['line']})" if first.get("line") else ""
    return ValidationFailed(
        f"the pipeline definition is not valid: {first['field']}{where}: {first['message']}",
        details=details,
    )


def _validate(
    data: Any, lines: dict[Loc, int] | None, extra: list[tuple[Loc, str]]
) -> PipelineDefinition:
    problems = extra + _problems(data)
    if problems:
        raise _fail(problems, lines)
    return PipelineDefinition.model_validate(data)


def parse_definition(text: str) -> PipelineDefinition:
    """Parse and validate pipeline YAML. Every problem is raised at once as ValidationFailed,
    `details=[{"field": "stages[1].steps[0].timeout", "line": 12, "message": ...}, ...]`,
    sorted by line; YAML that does not parse is one problem with its line and column."""
    try:
        node, data = bounded_yaml.compose_and_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        where = f" at line {line}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        message = f"the pipeline definition is not valid YAML{where}: {problem}"
        detail: dict[str, Any] = {"field": "definition", "line": line, "message": message}
        if mark:
            detail["column"] = mark.column + 1
        raise ValidationFailed(message, details=[detail]) from None
    if not isinstance(data, dict) or node is None:
        raise ValidationFailed(
            "the pipeline definition must be a mapping with stages",
            details=[
                {"field": "definition", "line": 1, "message": "expected a mapping with stages"}
            ],
        )
    lines: dict[Loc, int] = {}
    duplicates: list[Loc] = []
    _lines(node, (), lines, duplicates)
    extra = [(loc, f"{loc[-1]} is given twice") for loc in duplicates]
    return _validate(data, lines, extra)


def definition_from_json(data: dict[str, Any]) -> PipelineDefinition:
    """Validate a definition given as an object; the same errors as `parse_definition`, with
    no `line`."""
    if not isinstance(data, dict):
        raise ValidationFailed(
            "the pipeline definition must be an object with stages",
            details=[{"field": "definition", "message": "expected an object with stages"}],
        )
    return _validate(data, None, [])
