"""Pipeline templates: each renders, with its defaults and with other parameters, to a valid
definition; bad parameters are refused naming them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from core.errors import NotFound, ValidationFailed
from core.pipelines.definition import PipelineDefinition, parse_definition
from core.pipelines.templates import TEMPLATE_DIR, list_templates, render_template

REQUIRED = {"container": {"image": "registry.example.com/team/app"}}

CUSTOM: dict[str, dict[str, Any]] = {
    "python": {
        "image": "python:3.13",
        "python": "python3.13",
        "install": "-r requirements.txt",
        "source_dir": "src",
        "lint": False,
        "test_command": "python -m pytest tests",
        "coverage": True,
        "build_wheel": False,
    },
    "node": {
        "image": "node:22-alpine",
        "lint": False,
        "test_command": "npm run test:ci",
        "build_command": "npm run build -- --prod",
        "build_dir": "build/web",
    },
    "container": {
        "image": "ghcr.io/acme/api",
        "dockerfile": "deploy/Dockerfile",
        "context": "services/api",
        "push_branches": ["main", "release/*"],
    },
}


def _render(name: str, params: dict[str, Any]) -> PipelineDefinition:
    return parse_definition(render_template(name, params))


def _step(definition: PipelineDefinition, stage: str, index: int = 0) -> Any:
    return next(s for s in definition.stages if s.name == stage).steps[index]


def _bad(name: str, params: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as caught:
        render_template(name, params)
    assert caught.value.status_code == 422
    return dict(caught.value.details[0])


def test_the_templates_and_their_parameters() -> None:
    templates = list_templates()
    assert {"python", "node", "container"} <= set(templates)
    for name, template in templates.items():
        assert template.description, name
        assert (TEMPLATE_DIR / f"{name}.yaml.j2").is_file()
        for key, spec in template.parameters.items():
            assert spec.description, f"{name}.{key}"
            assert spec.required or spec.default is not None, f"{name}.{key}"
        assert set(CUSTOM[name]) == set(template.parameters), name
    assert templates["container"].parameters["image"].required


@pytest.mark.parametrize("name", ["python", "node", "container"])
def test_every_template_renders_with_defaults(name: str) -> None:
    definition = _render(name, REQUIRED.get(name, {}))
    assert definition.name == name
    assert len(definition.stages) >= 2


@pytest.mark.parametrize("name", ["python", "node", "container"])
def test_every_template_renders_with_custom_parameters(name: str) -> None:
    default = _render(name, REQUIRED.get(name, {}))
    custom = _render(name, CUSTOM[name])
    assert custom != default


def test_python() -> None:
    default = _render("python", {})
    assert [s.name for s in default.stages] == ["setup", "lint", "test", "build"]
    assert "-m venv .venv" in _step(default, "setup").run
    assert "ruff check ." in _step(default, "lint").run
    test = _step(default, "test")
    assert "python -m pytest -q --junitxml=reports/junit.xml" in test.run
    assert [a.path for a in test.artifacts] == ["reports/junit.xml"]
    assert _step(default, "build").artifacts[0].path == "dist"
    assert all(s.image == "python:3.12-slim" for st in default.stages for s in st.steps)

    custom = _render("python", CUSTOM["python"])
    assert [s.name for s in custom.stages] == ["setup", "test"]
    assert "python3.13 -m venv" in _step(custom, "setup").run
    assert "install --quiet -r requirements.txt" in _step(custom, "setup").run
    test = _step(custom, "test")
    assert "python -m pytest tests --junitxml=reports/junit.xml --cov" in test.run
    assert [a.name for a in test.artifacts] == ["junit", "coverage"]
    assert test.image == "python:3.13"


def test_node() -> None:
    default = _render("node", {})
    assert [s.name for s in default.stages] == ["install", "lint", "test", "build"]
    assert _step(default, "install").run == "npm ci"
    assert _step(default, "build").artifacts[0].path == "dist"
    custom = _render("node", CUSTOM["node"])
    assert [s.name for s in custom.stages] == ["install", "test", "build"]
    assert _step(custom, "test").run == "npm run test:ci"
    assert _step(custom, "build").artifacts[0].path == "build/web"
    assert _step(custom, "build").image == "node:22-alpine"


def test_container_pushes_on_main_only() -> None:
    default = _render("container", REQUIRED["container"])
    assert default.env["IMAGE"] == "registry.example.com/team/app"
    build, push = default.stages
    assert build.applies_to("feature/x") and build.applies_to("main")
    assert "docker build" in build.steps[0].run
    assert "docker push" in push.steps[0].run
    assert push.applies_to("main")
    assert not push.applies_to("feature/x")
    custom = _render("container", CUSTOM["container"])
    assert custom.env["DOCKERFILE"] == "deploy/Dockerfile"
    assert custom.env["BUILD_CONTEXT"] == "services/api"
    assert custom.stages[1].applies_to("release/2")


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("container", {}, "image"),
        ("container", {"image": "a", "colour": "red"}, "colour"),
        ("container", {"image": ""}, "image"),
        ("container", {"image": "a\nb"}, "image"),
        ("container", {"image": "a", "push_branches": "main"}, "push_branches"),
        ("container", {"image": "a", "push_branches": []}, "push_branches"),
        ("container", {"image": "a", "push_branches": ["main", 3]}, "push_branches"),
        ("python", {"lint": "false"}, "lint"),
        ("python", {"python": 3}, "python"),
        ("node", {"build_dir": None}, "build_dir"),
    ],
)
def test_bad_parameters_are_named(name: str, params: dict[str, Any], field: str) -> None:
    detail = _bad(name, params)
    assert detail["field"] == f"template.parameters.{field}"
    assert field in detail["message"]


def test_a_parameter_that_breaks_the_definition() -> None:
    detail = _bad("node", {"build_dir": "../outside"})
    assert detail["field"] == "template.parameters"
    assert "artifacts[0].path" in detail["message"]


def test_unknown_template() -> None:
    with pytest.raises(NotFound, match="python"):
        render_template("cobol", {})


def test_templates_are_sandboxed(tmp_path: Path) -> None:
    (tmp_path / "templates.yaml").write_text("evil:\n  description: x\n")
    (tmp_path / "evil.yaml.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(SecurityError, match="unsafe"):
        render_template("evil", {}, directory=tmp_path)
    strict = tmp_path / "strict"
    strict.mkdir()
    (strict / "templates.yaml").write_text("strict:\n  description: x\n")
    (strict / "strict.yaml.j2").write_text("name: {{ missing }}\n")
    with pytest.raises(UndefinedError, match="missing"):
        render_template("strict", {}, directory=strict)
