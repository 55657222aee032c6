"""Pipeline definitions: what is accepted, and errors that name the field and the line."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from core.errors import ValidationFailed
from core.pipelines.definition import (
    DEFINITION_PATH,
    PipelineDefinition,
    branch_matches,
    definition_from_json,
    parse_definition,
)

GOOD = """\
env:
  CI: "true"
stages:
  - name: test
    parallel: true
    steps:
      - name: unit
        run: pytest -q
      - name: lint
        run: ruff check .
        timeout: 5m
  - name: deploy
    when:
      branches: [main]
    steps:
      - name: ship
        run: ./ship.sh
        env: {TARGET: prod}
        artifacts:
          - {name: report, path: out/report.html}
"""


def _errors(text: str) -> list[dict[str, Any]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition(text)
    assert caught.value.status_code == 422
    return list(caught.value.details)


def test_a_good_definition() -> None:
    definition = parse_definition(GOOD)
    assert DEFINITION_PATH == ".idp/pipeline.yaml"
    assert definition.name is None
    assert definition.env == {"CI": "true"}
    assert [s.name for s in definition.stages] == ["test", "deploy"]
    assert definition.stages[0].parallel
    assert not definition.stages[1].parallel
    assert definition.stages[0].steps[1].timeout == timedelta(minutes=5)
    assert definition.stages[0].steps[0].timeout == timedelta(minutes=30)
    assert definition.stages[1].applies_to("main")
    assert not definition.stages[1].applies_to("feature/x")
    assert not definition.stages[1].applies_to(None)
    assert definition.stages[0].applies_to("anything")
    assert definition.stages[1].steps[0].artifacts[0].path == "out/report.html"
    assert definition.stages[1].steps[0].env == {"TARGET": "prod"}


def test_every_field_of_a_step() -> None:
    definition = parse_definition(
        """\
name: full
stages:
  - name: build
    steps:
      - name: compile
        run: |
          make
          make check
        env: {PORT: 8080, DEBUG: true, RATIO: 0.5}
        timeout: 1h30m
        image: gcc:14
        continue_on_error: true
        when: {branches: ["release/**"]}
        artifacts:
          - {name: bin, path: build/app, type: binary}
          - {name: logs, path: "logs/*.txt"}
"""
    )
    step = definition.stages[0].steps[0]
    assert definition.name == "full"
    assert step.run == "make\nmake check\n"
    assert step.env == {"PORT": "8080", "DEBUG": "true", "RATIO": "0.5"}
    assert step.timeout == timedelta(hours=1, minutes=30)
    assert step.image == "gcc:14"
    assert step.continue_on_error
    assert step.matches_branch("release/1/hotfix")
    assert not step.matches_branch("main")
    assert [(a.name, a.path, a.type) for a in step.artifacts] == [
        ("bin", "build/app", "binary"),
        ("logs", "logs/*.txt", None),
    ]
    dumped = definition.model_dump(mode="json")
    assert PipelineDefinition.model_validate(dumped) == definition


@pytest.mark.parametrize(
    ("change", "field", "line"),
    [
        (("timeout: 5m", "timeout: 7h"), "stages[0].steps[1].timeout", 11),
        (("timeout: 5m", "timeout: 0s"), "stages[0].steps[1].timeout", 11),
        (("timeout: 5m", "timeout: soon"), "stages[0].steps[1].timeout", 11),
        (("run: pytest -q", "run: ''"), "stages[0].steps[0].run", 8),
        (("name: unit", "name: Unit Tests"), "stages[0].steps[0].name", 7),
        (("name: deploy", "name: Deploy!"), "stages[1].name", 12),
        (
            ("path: out/report.html", "path: ../etc/passwd"),
            "stages[1].steps[0].artifacts[0].path",
            20,
        ),
        (
            ("path: out/report.html", "path: /etc/passwd"),
            "stages[1].steps[0].artifacts[0].path",
            20,
        ),
        (
            ("path: out/report.html", "path: out/../../x"),
            "stages[1].steps[0].artifacts[0].path",
            20,
        ),
        (("TARGET: prod", "BAD-NAME: prod"), "stages[1].steps[0].env.BAD-NAME", 18),
        (('CI: "true"', "CI: [1]"), "env.CI", 2),
        (
            ("        run: ./ship.sh\n", "        run: ./ship.sh\n        retries: 3\n"),
            "stages[1].steps[0].retries",
            18,
        ),
        (("parallel: true", "parallel: sometimes"), "stages[0].parallel", 5),
        (("branches: [main]", "branches: []"), "stages[1].when.branches", 14),
        (("branches: [main]", "branch: [main]"), "stages[1].when.branch", 14),
        (("name: lint", "name: unit"), "stages[0].steps[1].name", 9),
        (("name: deploy", "name: test"), "stages[1].name", 12),
        (("        run: pytest -q\n", ""), "stages[0].steps[0].run", 7),
        (('CI: "true"\n', 'CI: "true"\n  CI: "false"\n'), "env.CI", 3),
    ],
)
def test_errors_name_the_field_and_the_line(change: tuple[str, str], field: str, line: int) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    details = _errors(text)
    assert {"field": field, "line": line} in [
        {"field": d["field"], "line": d["line"]} for d in details
    ]


def test_every_problem_is_listed_in_line_order_and_the_message_names_the_first() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition(
            GOOD.replace("name: ship", "name: S").replace("timeout: 5m", "timeout: never")
        )
    details = caught.value.details
    assert [(d["field"], d["line"]) for d in details] == [
        ("stages[0].steps[1].timeout", 11),
        ("stages[1].steps[0].name", 16),
    ]
    assert all(d["message"] for d in details)
    assert "stages[0].steps[1].timeout (line 11)" in caught.value.message


def test_yaml_syntax_errors_have_a_line_and_a_column() -> None:
    [detail] = _errors("stages:\n  - name: [x\n")
    assert detail["field"] == "definition"
    assert detail["line"] == 3
    assert "column" in detail
    [detail] = _errors("stages:\n  - name: a\n   steps: []\n")
    assert detail["line"] == 3
    assert "line 3" in detail["message"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("- just\n- a list\n", "definition"),
        ("", "definition"),
        ("stages: []\n", "stages"),
        ("stages:\n  - name: a\n    steps: []\n", "stages[0].steps"),
        ("name: x\n", "stages"),
    ],
)
def test_empty_or_wrong_shapes(text: str, field: str) -> None:
    assert _errors(text)[0]["field"] == field


def test_object_definitions_have_no_lines() -> None:
    with pytest.raises(ValidationFailed) as caught:
        definition_from_json({"stages": [{"name": "s", "steps": [{"name": "a"}]}]})
    assert caught.value.details == [
        {"field": "stages[0].steps[0].run", "message": "Field required"}
    ]
    with pytest.raises(ValidationFailed) as caught:
        definition_from_json(
            {
                "stages": [
                    {"name": "s", "steps": [{"name": "a", "run": "x"}, {"name": "a", "run": "y"}]}
                ]
            }
        )
    assert caught.value.details == [
        {"field": "stages[0].steps[1].name", "message": "step name 'a' is already used"}
    ]
    good = definition_from_json({"stages": [{"name": "s", "steps": [{"name": "a", "run": "x"}]}]})
    assert good.stages[0].steps[0].run == "x"


def test_duplicate_artifact_names() -> None:
    details = _errors(
        GOOD.replace(
            "- {name: report, path: out/report.html}",
            "- {name: report, path: out/report.html}\n          - {name: report, path: b}",
        )
    )
    assert [(d["field"], d["line"]) for d in details] == [
        ("stages[1].steps[0].artifacts[1].name", 21)
    ]


def test_models_refuse_duplicates_when_built_directly() -> None:
    with pytest.raises(ValueError, match="stage names must be unique: a"):
        PipelineDefinition.model_validate(
            {"stages": [{"name": "a", "steps": [{"name": "x", "run": "y"}]}] * 2}
        )


@pytest.mark.parametrize(
    ("branch", "pattern", "expected"),
    [
        ("main", "main", True),
        ("mainline", "main", False),
        ("main", "mai?", True),
        ("release/1.2", "release/*", True),
        ("release/1/hotfix", "release/*", False),
        ("release/1/hotfix", "release/**", True),
        ("release", "release/**", False),
        ("anything/at/all", "**", True),
        ("fix", "**/fix", True),
        ("a/b/fix", "**/fix", True),
        ("a/b/fixes", "**/fix", False),
        ("feature/x", "*", False),
        ("feature.x", "feature.*", True),
        ("featureAx", "feature.x", False),
        ("v1.2.0", "v*", True),
    ],
)
def test_branch_globs(branch: str, pattern: str, expected: bool) -> None:
    assert branch_matches(branch, pattern) is expected
