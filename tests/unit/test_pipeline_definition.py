"""Pipeline definitions, triggers and templates: what is accepted, and errors that name the
field and the line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import NotFound, ValidationFailed
from core.pipelines.definition import branch_matches, definition_from_json, parse_definition
from core.pipelines.events import GitEvent
from core.pipelines.templates import list_templates, render_template
from core.pipelines.triggers import matches, parse_triggers

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


def _errors(text: str) -> list[dict[str, object]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition(text)
    return list(caught.value.details)


def test_a_good_definition() -> None:
    definition = parse_definition(GOOD)
    assert [s.name for s in definition.stages] == ["test", "deploy"]
    assert definition.stages[0].parallel
    assert definition.stages[0].steps[1].timeout == timedelta(minutes=5)
    assert definition.stages[0].steps[0].timeout == timedelta(minutes=30)
    assert definition.stages[1].applies_to("main")
    assert not definition.stages[1].applies_to("feature/x")
    assert definition.stages[1].steps[0].artifacts[0].path == "out/report.html"


@pytest.mark.parametrize(
    ("change", "field", "line"),
    [
        (("timeout: 5m", "timeout: 7h"), "stages[0].steps[1].timeout", 11),
        (("run: pytest -q", "run: ''"), "stages[0].steps[0].run", 8),
        (("name: unit", "name: Unit Tests"), "stages[0].steps[0].name", 7),
        (
            ("path: out/report.html", "path: ../etc/passwd"),
            "stages[1].steps[0].artifacts[0].path",
            20,
        ),
        (("TARGET: prod", "BAD-NAME: prod"), "stages[1].steps[0].env", 18),
        (
            ("        run: ./ship.sh\n", "        run: ./ship.sh\n        retries: 3\n"),
            "stages[1].steps[0].retries",
            18,
        ),
        (("name: lint", "name: unit"), "stages[0]", 4),
        (("name: deploy", "name: test"), "definition", 1),
    ],
)
def test_errors_name_the_field_and_the_line(change: tuple[str, str], field: str, line: int) -> None:
    details = _errors(GOOD.replace(*change))
    assert {"field": field, "line": line} in [
        {"field": d["field"], "line": d["line"]} for d in details
    ]


def test_every_problem_is_listed_and_yaml_errors_have_a_line() -> None:
    details = _errors(
        GOOD.replace("timeout: 5m", "timeout: never").replace("name: ship", "name: S")
    )
    assert {d["field"] for d in details} == {
        "stages[0].steps[1].timeout",
        "stages[1].steps[0].name",
    }
    assert _errors("stages:\n  - name: [x\n")[0]["line"] == 3
    assert _errors("- just\n- a list\n")[0]["field"] == "definition"
    assert _errors("stages: []\n")[0]["field"] == "stages"


def test_object_definitions_have_no_lines() -> None:
    with pytest.raises(ValidationFailed) as caught:
        definition_from_json({"stages": [{"name": "s", "steps": [{"name": "a"}]}]})
    assert caught.value.details == [
        {"field": "stages[0].steps[0].run", "message": "Field required"}
    ]


def test_branch_globs() -> None:
    assert branch_matches("main", "main")
    assert branch_matches("release/1.2", "release/*")
    assert not branch_matches("release/1/hotfix", "release/*")
    assert branch_matches("release/1/hotfix", "release/**")
    assert branch_matches("anything/at/all", "**")
    assert not branch_matches("mainline", "main")


def test_triggers_match_events() -> None:
    triggers = parse_triggers(
        {
            "push": {"branches": ["main", "release/*"]},
            "pull_request": {"branches": ["main"]},
            "tag": {"patterns": ["v*"]},
        }
    )
    assert matches(triggers, GitEvent(kind="push", branch="release/2"))
    assert not matches(triggers, GitEvent(kind="push", branch="feature/x"))
    assert not matches(triggers, GitEvent(kind="push", branch="main", deleted=True))
    assert matches(
        triggers, GitEvent(kind="pull_request", target_branch="main", action="synchronize")
    )
    assert not matches(
        triggers, GitEvent(kind="pull_request", target_branch="main", action="closed")
    )
    assert matches(triggers, GitEvent(kind="tag", tag="v1.2.0"))
    assert not matches(triggers, GitEvent(kind="tag", tag="nightly"))
    assert matches(triggers, GitEvent(kind="manual"))
    assert not matches(triggers, GitEvent(kind="ping"))
    assert not matches(parse_triggers({}), GitEvent(kind="push", branch="main"))
    assert not matches(parse_triggers({"manual": False}), GitEvent(kind="manual"))


def test_bad_triggers_name_the_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_triggers({"cron": ["every day"], "push": {"branch": ["main"]}})
    fields = {d["field"] for d in caught.value.details}
    assert fields == {"triggers.cron", "triggers.push.branch"}


@pytest.mark.parametrize("name", ["python", "node", "container"])
def test_every_template_renders_to_a_valid_definition(name: str) -> None:
    template = list_templates()[name]
    params = {k: "registry.example.com/app" for k, p in template.parameters.items() if p.required}
    assert parse_definition(render_template(name, params)).stages


def test_template_parameters() -> None:
    with_lint = parse_definition(render_template("python", {}))
    without = parse_definition(render_template("python", {"lint": False}))
    assert "lint" in [s.name for s in with_lint.stages]
    assert "lint" not in [s.name for s in without.stages]
    container = parse_definition(
        render_template("container", {"image": "reg/app", "push_branches": ["main", "prod"]})
    )
    assert container.stages[1].when is not None
    assert container.stages[1].when.branches == ["main", "prod"]
    for params, field in [({}, "image"), ({"image": "a", "colour": "red"}, "colour")]:
        with pytest.raises(ValidationFailed) as caught:
            render_template("container", params)
        assert caught.value.details[0]["field"] == f"template.parameters.{field}"
    with pytest.raises(NotFound):
        render_template("cobol", {})
