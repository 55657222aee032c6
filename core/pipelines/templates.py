"""Pipeline templates in `templates/pipelines/`: `<name>.yaml.j2` rendered with parameters
declared (type, default, required) in `templates.yaml`. What a template renders is a
definition that `parse_definition` accepts; a template that does not is a bug, and its tests
say so."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, Field

from core.errors import NotFound, ValidationFailed
from core.pipelines.definition import parse_definition
from core.settings import PROJECT_ROOT

TEMPLATE_DIR = PROJECT_ROOT / "templates" / "pipelines"

ParameterType = Literal["string", "boolean", "list"]


class TemplateParameter(BaseModel):
    description: str = ""
    type: ParameterType = "string"
    default: Any = None
    required: bool = False


class PipelineTemplate(BaseModel):
    name: str
    description: str
    parameters: dict[str, TemplateParameter] = Field(default_factory=dict)


@cache
def list_templates(directory: Path = TEMPLATE_DIR) -> dict[str, PipelineTemplate]:
    """The templates by name: those declared in `templates.yaml` that have a `.yaml.j2`."""
    declared = yaml.safe_load((directory / "templates.yaml").read_text()) or {}
    return {
        name: PipelineTemplate(name=name, **spec)
        for name, spec in declared.items()
        if (directory / f"{name}.yaml.j2").is_file()
    }


def _check(name: str, spec: TemplateParameter, value: Any) -> str | None:
    """What is wrong with `value` for a parameter, or None."""
    if spec.type == "boolean":
        return None if isinstance(value, bool) else f"{name} must be true or false"
    if spec.type == "list":
        if not isinstance(value, list) or not value:
            return f"{name} must be a non-empty list of strings"
        bad = [v for v in value if not isinstance(v, str) or not v.strip() or "\n" in v]
        return f"{name} must be a list of one-line strings" if bad else None
    if not isinstance(value, str) or "\n" in value or not value.strip():
        return f"{name} must be one non-empty line of text"
    return None


def template_values(
    name: str, parameters: dict[str, Any], directory: Path = TEMPLATE_DIR
) -> dict[str, Any]:
    """The parameters of template `name` over its defaults, checked; NotFound for an unknown
    template, ValidationFailed naming `template.parameters.<name>` for a bad parameter."""
    template = list_templates(directory).get(name)
    if template is None:
        known = ", ".join(sorted(list_templates(directory)))
        raise NotFound(f"no pipeline template named {name!r} (known: {known})")
    unknown = sorted(set(parameters) - set(template.parameters))
    if unknown:
        raise ValidationFailed.on(
            f"template.parameters.{unknown[0]}",
            f"template {name} has no parameter {unknown[0]} "
            f"(it takes: {', '.join(template.parameters)})",
        )
    values: dict[str, Any] = {}
    for key, spec in template.parameters.items():
        value = parameters.get(key, spec.default)
        if value is None:
            raise ValidationFailed.on(f"template.parameters.{key}", f"template {name} needs {key}")
        problem = _check(key, spec, value)
        if problem:
            raise ValidationFailed.on(f"template.parameters.{key}", problem)
        values[key] = value
    return values


def render_template(name: str, parameters: dict[str, Any], directory: Path = TEMPLATE_DIR) -> str:
    """The pipeline YAML of template `name` with `parameters` over its defaults; always a
    definition `parse_definition` accepts, or ValidationFailed."""
    values = template_values(name, parameters, directory)
    env = SandboxedEnvironment(
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )
    text = env.from_string((directory / f"{name}.yaml.j2").read_text()).render(**values)
    try:
        parse_definition(text)
    except ValidationFailed as exc:  # a parameter's text broke the YAML, e.g. "a: b"
        raise ValidationFailed(
            f"template {name} with these parameters is not a valid pipeline: {exc.message}",
            details=[{"field": "template.parameters", "message": exc.message}],
        ) from None
    return text
