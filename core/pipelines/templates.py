"""Pipeline templates in `templates/pipelines/`: `<name>.yaml.j2` rendered with parameters
declared (with defaults) in `templates.yaml`. What a template renders is a definition that
`parse_definition` accepts; a template that does not is a bug, and its tests say so."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, Field

from core.errors import NotFound, ValidationFailed
from core.pipelines.definition import parse_definition
from core.settings import PROJECT_ROOT

TEMPLATE_DIR = PROJECT_ROOT / "templates" / "pipelines"


class TemplateParameter(BaseModel):
    description: str = ""
    default: Any = None
    required: bool = False


class PipelineTemplate(BaseModel):
    name: str
    description: str
    parameters: dict[str, TemplateParameter] = Field(default_factory=dict)


@cache
def list_templates(directory: Path = TEMPLATE_DIR) -> dict[str, PipelineTemplate]:
    declared = yaml.safe_load((directory / "templates.yaml").read_text()) or {}
    return {
        name: PipelineTemplate(name=name, **spec)
        for name, spec in declared.items()
        if (directory / f"{name}.yaml.j2").is_file()
    }


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[{"field": field, "message": message}])


def render_template(name: str, parameters: dict[str, Any], directory: Path = TEMPLATE_DIR) -> str:
    """The pipeline YAML of template `name` with `parameters` over its defaults."""
    template = list_templates(directory).get(name)
    if template is None:
        known = ", ".join(sorted(list_templates(directory)))
        raise NotFound(f"no pipeline template named {name!r} (known: {known})")
    unknown = sorted(set(parameters) - set(template.parameters))
    if unknown:
        raise _invalid(
            f"template.parameters.{unknown[0]}",
            f"template {name} has no parameter {unknown[0]} "
            f"(it takes: {', '.join(template.parameters)})",
        )
    values: dict[str, Any] = {}
    for key, spec in template.parameters.items():
        value = parameters.get(key, spec.default)
        if value is None and spec.required:
            raise _invalid(f"template.parameters.{key}", f"template {name} needs {key}")
        if isinstance(value, str) and ("\n" in value or not value.strip()):
            raise _invalid(f"template.parameters.{key}", f"{key} must be one non-empty line")
        values[key] = value
    env = SandboxedEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    text = env.from_string((directory / f"{name}.yaml.j2").read_text()).render(**values)
    parse_definition(text)  # a parameter may still make it invalid (e.g. a list for a string)
    return text
