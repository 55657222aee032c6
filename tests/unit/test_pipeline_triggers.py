"""Pipeline triggers: validation naming the field, and which events start a run."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ValidationFailed
from core.pipelines.events import GitEvent
from core.pipelines.triggers import Triggers, check_cron, matches, parse_triggers

ALL = parse_triggers(
    {
        "push": {"branches": ["main", "release/*"], "tags": ["v*"]},
        "pull_request": {"branches": ["main"]},
        "tag": {"patterns": ["rc-*"]},
        "cron": ["0 3 * * 1-5"],
    }
)


def _fields(data: Any) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        parse_triggers(data)
    assert caught.value.status_code == 422
    assert caught.value.details[0]["field"] in caught.value.message
    return [d["field"] for d in caught.value.details]


def test_defaults() -> None:
    triggers = parse_triggers({})
    assert triggers == parse_triggers(None) == Triggers()
    assert triggers.push is None and triggers.pull_request is None and triggers.tag is None
    assert triggers.manual is True and triggers.cron == []
    empty = parse_triggers({"push": {}, "pull_request": {}, "tag": {}})
    assert empty.push is not None and empty.push.branches == ["**"]
    assert empty.pull_request is not None
    assert empty.pull_request.actions == ["opened", "synchronize", "reopened"]
    assert empty.tag is not None and empty.tag.patterns == ["**"]


def test_stored_triggers_read_back() -> None:
    assert parse_triggers(ALL.model_dump(mode="json")) == ALL


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (GitEvent(kind="push", branch="main"), True),
        (GitEvent(kind="push", branch="release/2"), True),
        (GitEvent(kind="push", branch="release/2/hotfix"), False),
        (GitEvent(kind="push", branch="feature/x"), False),
        (GitEvent(kind="push", branch=None), False),
        (GitEvent(kind="push", branch="main", deleted=True), False),
        (GitEvent(kind="pull_request", target_branch="main", action="opened"), True),
        (GitEvent(kind="pull_request", target_branch="main", action="synchronize"), True),
        (GitEvent(kind="pull_request", target_branch="main", action="reopened"), True),
        (GitEvent(kind="pull_request", target_branch="main", action="closed"), False),
        (GitEvent(kind="pull_request", target_branch="develop", action="opened"), False),
        (
            GitEvent(kind="pull_request", branch="main", target_branch="dev", action="opened"),
            False,
        ),
        (GitEvent(kind="tag", tag="rc-1"), True),
        (GitEvent(kind="tag", tag="v1.2.0"), True),
        (GitEvent(kind="tag", tag="nightly"), False),
        (GitEvent(kind="tag", tag="v1.2.0", deleted=True), False),
        (GitEvent(kind="manual"), True),
        (GitEvent(kind="cron"), True),
        (GitEvent(kind="ping"), False),
    ],
)
def test_events(event: GitEvent, expected: bool) -> None:
    assert matches(ALL, event) is expected


def test_absent_sections_never_trigger() -> None:
    none = parse_triggers({"manual": False})
    for event in [
        GitEvent(kind="push", branch="main"),
        GitEvent(kind="pull_request", target_branch="main", action="opened"),
        GitEvent(kind="tag", tag="v1"),
        GitEvent(kind="manual"),
        GitEvent(kind="cron"),
        GitEvent(kind="ping"),
    ]:
        assert not matches(none, event), event.kind


def test_pull_request_actions_and_empty_sections() -> None:
    closed = parse_triggers({"pull_request": {"actions": ["closed"]}, "push": {}})
    assert matches(closed, GitEvent(kind="pull_request", target_branch="x/y", action="closed"))
    assert not matches(closed, GitEvent(kind="pull_request", target_branch="x", action="opened"))
    assert matches(closed, GitEvent(kind="push", branch="deep/feature/branch"))
    assert not matches(closed, GitEvent(kind="tag", tag="v1"))


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"cron": ["every day"]}, ["triggers.cron[0]"]),
        ({"cron": ["0 3 * * *", "61 * * * *"]}, ["triggers.cron[1]"]),
        ({"push": {"branch": ["main"]}}, ["triggers.push.branch"]),
        ({"push": {"branches": ["main", ""]}}, ["triggers.push.branches[1]"]),
        ({"push": {"branches": "main"}}, ["triggers.push.branches"]),
        ({"pull_request": {"actions": ["opened", "merge"]}}, ["triggers.pull_request.actions[1]"]),
        ({"pull_request": {"actions": []}}, ["triggers.pull_request.actions"]),
        ({"tag": {"patterns": [3]}}, ["triggers.tag.patterns[0]"]),
        ({"manual": "yes please"}, ["triggers.manual"]),
        ({"schedule": "daily"}, ["triggers.schedule"]),
        (["push"], ["triggers"]),
        (
            {"cron": ["every day"], "push": {"branch": ["main"]}},
            ["triggers.push.branch", "triggers.cron[0]"],
        ),
    ],
)
def test_bad_triggers_name_the_field(data: Any, fields: list[str]) -> None:
    assert _fields(data) == fields


@pytest.mark.parametrize(
    "expression",
    ["* * * * *", "0 3 * * 1-5", "*/15 0-6 1,15 * *", "0 0 1 jan,jul *", "30 2 * * mon-fri"],
)
def test_good_cron(expression: str) -> None:
    assert check_cron(expression) == expression


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 3 * *", "five fields"),
        ("0 3 * * * *", "five fields"),
        ("60 * * * *", "minute '60'"),
        ("0 24 * * *", "hour '24'"),
        ("0 0 0 * *", "day of month '0'"),
        ("0 0 * 13 *", "month '13'"),
        ("0 0 * * 8", "day of week '8'"),
        ("5-1 * * * *", "backwards"),
        ("*/0 * * * *", "'*/0'"),
        ("@daily", "five fields"),
    ],
)
def test_bad_cron(expression: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_cron(expression)
