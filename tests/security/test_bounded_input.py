"""Hostile input is refused within bounds (issue 15, finding 8): YAML alias bombs and runaway
nesting in pipeline definitions and catalog files, notification templates whose loops
multiply, and oversized bodies on the public routes (Git host webhooks, Slack interactions),
which are answered before they are read whole."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from core.bounded_yaml import MAX_DEPTH, MAX_NODES
from core.errors import ValidationFailed
from core.notifications.rendering import (
    MAX_LOOP_ITEMS,
    MAX_RENDER_SECONDS,
    RenderError,
    TemplateSource,
    check_template,
    render,
    render_async,
)
from core.pipelines.definition import parse_definition
from tests.integration.identity_helpers import Api, assert_error

# The "billion laughs": ten levels of ten aliases each, 10^10 values from under 1 KiB.
LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)
)
STEP = "stages:\n  - name: build\n    steps:\n      - name: make\n        run: make\n"


def _refusal(text: str) -> dict[str, object]:
    with pytest.raises(ValidationFailed) as caught:
        parse_definition(text)
    [detail] = caught.value.details
    assert detail["field"] == "definition"
    return dict(detail)


def test_an_alias_bomb_in_a_pipeline_definition_is_refused_at_its_first_anchor() -> None:
    assert len(LAUGHS) < 1024
    detail = _refusal(STEP + LAUGHS)
    assert "anchors and aliases" in str(detail["message"])
    assert detail["line"] == 6  # the first anchor, after the five lines of the stage


def test_a_merge_key_and_a_single_alias_are_refused_too() -> None:
    merged = "defaults: &d {timeout: 5m}\n" + STEP + "extra:\n  <<: *d\n"
    assert "anchors and aliases" in str(_refusal(merged)["message"])


def test_nesting_and_size_are_capped() -> None:
    deep = STEP + "env:\n  X: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    assert f"nested more than {MAX_DEPTH}" in str(_refusal(deep)["message"])
    wide = STEP + "env:\n  X: [" + ", ".join(["1"] * (MAX_NODES + 1)) + "]\n"
    assert f"more than {MAX_NODES} values" in str(_refusal(wide)["message"])
    # A plain definition is untouched by the caps.
    assert parse_definition(STEP).stages[0].steps[0].name == "make"


@pytest.fixture
async def admin(api: Api) -> AsyncIterator[dict[str, str]]:
    _, headers = await api.token("admin")
    yield headers


async def test_a_catalog_file_with_aliases_is_a_422_that_imports_nothing(
    api: Api, admin: dict[str, str]
) -> None:
    slug = f"bounded-{uuid.uuid4().hex[:6]}"
    org = await api.client.post(
        "/organizations", json={"name": "Bounded", "slug": slug}, headers=admin
    )
    assert org.status_code == 201, org.text
    content = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: laughs\n"
        "spec:\n  type: service\n  owner: team-a\n  lifecycle: production\n" + LAUGHS
    )
    answer = await api.client.post(
        "/catalog/import", json={"org_id": org.json()["id"], "content": content}, headers=admin
    )
    assert "anchors and aliases" in assert_error(answer, 422, "validation_error")["message"]
    listed = await api.client.get("/services", params={"q": "laughs"}, headers=admin)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    "path", ["/webhooks/github", "/webhooks/gitlab", "/integrations/slack/interactions"]
)
async def test_a_public_route_refuses_a_body_over_5_mib_before_reading_it(
    api: Api, path: str
) -> None:
    # Declared too large: refused from the header alone.
    declared = await api.client.post(
        path, content=b"x" * 16, headers={"Content-Length": str(6 * 1024 * 1024)}
    )
    assert_error(declared, 413, "payload_too_large")

    # Streamed with no length: refused once it passes the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    streamed = await api.client.post(path, content=chunks())
    assert_error(streamed, 413, "payload_too_large")
    # A body within the limit goes on to the route's own checks (the signature here).
    small = await api.client.post(path, content=b"{}")
    assert small.status_code == 401, small.text


NESTED_LOOPS = (
    '{"n": "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}'
    '{% endfor %}{% endfor %}{% endfor %}"}'
)


def test_a_template_whose_loops_multiply_is_refused_on_save_and_at_send_time() -> None:
    source = TemplateSource(subject=None, body=NESTED_LOOPS, text_body=None)
    with pytest.raises(ValidationFailed) as caught:
        check_template("pipeline.started", "webhook", source)
    assert f"loops over more than {MAX_LOOP_ITEMS} items" in caught.value.message
    with pytest.raises(RenderError, match="loops over more than"):
        render("pipeline.started", "webhook", source, {})
    # Loops within the budget render, each rendering with a budget of its own.
    fine = TemplateSource(
        subject=None,
        body='{"n": "{% for a in range(100) %}{% for b in range(90) %}{% endfor %}{% endfor %}ok"}',
        text_body=None,
    )
    for _ in range(3):
        assert render("pipeline.started", "webhook", fine, {}).payload == {"n": "ok"}


async def test_loops_over_a_context_value_stop_at_the_time_limit_off_the_event_loop() -> None:
    # `range()` is budgeted, but a loop over a variable is not: three nested loops over a
    # 2,000-character ref are 8 billion iterations. The deadline stops them, and the event
    # loop keeps running meanwhile (the rendering is on a thread).
    body = (
        '{"n": "{% for a in ref %}{% for b in ref %}{% for c in ref %}'
        '{% endfor %}{% endfor %}{% endfor %}ok"}'
    )
    source = TemplateSource(subject=None, body=body, text_body=None)
    context = {"pipeline": "ci", "service": "api", "run_id": "r", "ref": "x" * 2000}
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(RenderError) as caught:
            await render_async("pipeline.started", "webhook", source, context)
    finally:
        ticker.cancel()
    assert f"rendering took longer than {MAX_RENDER_SECONDS:g} s" in caught.value.message
    assert ticks > 0
    # The same template with a short value renders; the deadline is per rendering.
    short = dict(context, ref="abc")
    rendered = await render_async("pipeline.started", "webhook", source, short)
    assert rendered.payload == {"n": "ok"}


@pytest.mark.parametrize(
    ("name", "reason"),
    [("Acme\u0000", "NUL characters"), ("Acme \ud800", "lone UTF-16 surrogates")],
)
async def test_text_no_database_can_store_is_a_422_naming_the_field(
    api: Api, admin: dict[str, str], name: str, reason: str
) -> None:
    # PostgreSQL refuses NUL in text and no backend encodes a lone surrogate: such a value used
    # to reach the database and answer 500. JSON can spell both, so they are refused on entry.
    slug = f"strict-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"name": name, "slug": slug})  # ASCII, with \u escapes
    answer = await api.client.post(
        "/organizations",
        content=body,
        headers={**admin, "Content-Type": "application/json"},
    )
    error = assert_error(answer, 422, "validation_error")
    assert error["details"][0]["field"] == "body.name"
    assert reason in error["message"]
    listed = await api.client.get("/organizations", headers=admin)
    assert slug not in listed.text
    # A NUL in the query string is refused the same way, and odd but valid text is fine.
    nul = await api.client.get("/services", params={"q": "a\u0000b"}, headers=admin)
    assert assert_error(nul, 422, "validation_error")["details"][0]["field"] == "query.q"
    fine = await api.client.post(
        "/organizations", json={"name": "Équipe \U0001f680", "slug": slug}, headers=admin
    )
    assert fine.status_code == 201, fine.text
    assert fine.json()["name"] == "Équipe \U0001f680"


async def test_an_offset_past_any_integer_column_is_a_400(api: Api, admin: dict[str, str]) -> None:
    answer = await api.client.get("/teams", params={"offset": 10**30}, headers=admin)
    assert "offset must be between 0 and" in assert_error(answer, 400)["message"]
