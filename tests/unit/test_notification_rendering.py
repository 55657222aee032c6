"""Notification templates: the declared events, the file templates for every event and channel
type, checking overrides before they are saved, and rendering in the sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import NotFound, ValidationFailed
from core.notifications.rendering import (
    CHANNEL_TYPES,
    COMMON_VARIABLES,
    TEMPLATES_DIR,
    RenderError,
    TemplateSource,
    check_template,
    default_template,
    events,
    render,
)

EVENT_NAMES = sorted(events())
CASES = [(event, ctype) for event in EVENT_NAMES for ctype in CHANNEL_TYPES]
PLATFORM = "https://idp.example.com"


def sample(event: str) -> dict[str, Any]:
    return {name: f"<{name}>" for name in events()[event].variables}


def required_only(event: str) -> dict[str, Any]:
    variables = events()[event].variables
    return {name: name for name, text in variables.items() if "(optional)" not in text}


def webhook(body: str) -> TemplateSource:
    return TemplateSource(subject=None, body=body, text_body=None)


def email(subject: str, body: str, text_body: str | None) -> TemplateSource:
    return TemplateSource(subject=subject, body=body, text_body=text_body)


def test_the_events_and_their_variables() -> None:
    expected = {
        "pipeline.started",
        "pipeline.succeeded",
        "pipeline.failed",
        "promotion.awaiting_approval",
        "promotion.approved",
        "promotion.rejected",
        "promotion.expired",
        "promotion.deployed",
        "promotion.rolled_back",
        "environment.provisioned",
        "environment.failed",
        "environment.awaiting_approval",
        "environment.destroyed",
        "health.changed",
        "budget.exceeded",
        "custom",
    }
    assert expected <= set(events())
    for name, spec in events().items():
        assert spec.name == name and spec.description and spec.variables
        assert all(text.strip() for text in spec.variables.values())
        assert not set(spec.variables) & set(COMMON_VARIABLES)
    assert set(events()["custom"].variables) == {"title", "message", "url"}
    assert {"failed_stage", "failed_step", "error", "run_url"} <= set(
        events()["pipeline.failed"].variables
    )
    assert events() is events()  # loaded once


def test_every_event_has_its_template_files() -> None:
    files = {"slack.json.j2", "email.subject.j2", "email.html.j2", "email.txt.j2"}
    for event in EVENT_NAMES:
        assert files | {"webhook.json.j2"} <= {p.name for p in (TEMPLATES_DIR / event).iterdir()}


@pytest.mark.parametrize(("event", "ctype"), CASES)
def test_default_templates_pass_the_check_and_render(event: str, ctype: str) -> None:
    source = default_template(event, ctype)
    check_template(event, ctype, source)
    for context in (sample(event), required_only(event)):
        message = render(event, ctype, source, context, platform_url=PLATFORM)
        if ctype == "slack":
            assert message.payload is not None and message.html is None
            assert isinstance(message.payload["text"], str) and message.payload["text"]
            assert message.text == message.payload["text"]
            blocks = message.payload["blocks"]
            assert blocks and all(isinstance(b, dict) and b.get("type") for b in blocks)
            header = blocks[0]["text"]["text"]
            assert len(header) <= 150
        elif ctype == "email":
            assert message.subject and "\n" not in message.subject
            assert message.html and message.html.lstrip().startswith("<!DOCTYPE html>")
            assert message.text.strip() and message.payload is None
        else:
            assert message.payload is not None and message.payload["event"] == event
            assert json.loads(message.text) == message.payload
            assert set(message.payload["data"]) == set(events()[event].variables)


def test_sample_values_reach_the_message() -> None:
    context = {
        "pipeline": "build",
        "service": "billing",
        "run_id": "run-42",
        "run_url": "https://idp.example.com/runs/run-42",
        "error": "exit status 2",
        "duration_seconds": 125,
        "sha": "0123456789abcdef0123",
    }
    slack = render(
        "pipeline.failed", "slack", default_template("pipeline.failed", "slack"), context
    )
    dumped = json.dumps(slack.payload)
    assert "billing" in dumped and "exit status 2" in dumped and "2m 5s" in dumped
    assert "0123456789ab`" in dumped and "0123456789abc" not in dumped  # short SHA
    assert context["run_url"] in dumped
    mail = render("pipeline.failed", "email", default_template("pipeline.failed", "email"), context)
    assert mail.subject == "[billing] Pipeline build failed"
    assert "exit status 2" in mail.text and context["run_url"] in (mail.html or "")
    hook = render(
        "pipeline.failed", "webhook", default_template("pipeline.failed", "webhook"), context
    )
    assert hook.payload is not None
    assert hook.payload["data"]["duration_seconds"] == 125
    assert hook.payload["data"]["ref"] is None  # optional and absent: null, not missing


def test_unknown_event_or_channel_type_has_no_default() -> None:
    with pytest.raises(NotFound):
        default_template("no.such.event", "slack")
    with pytest.raises(NotFound):
        default_template("pipeline.failed", "pager")


def test_awaiting_approval_slack_message_has_approve_and_reject_buttons() -> None:
    context = sample("promotion.awaiting_approval") | {
        "promotion_id": "7f1c0d2e-0000-4000-8000-000000000001",
        "promotion_url": "https://idp.example.com/promotions/7f1c",
    }
    message = render(
        "promotion.awaiting_approval",
        "slack",
        default_template("promotion.awaiting_approval", "slack"),
        context,
    )
    assert message.payload is not None
    actions = [b for b in message.payload["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1
    assert actions[0]["block_id"] == "promotion-7f1c0d2e-0000-4000-8000-000000000001"
    buttons = {e.get("action_id"): e for e in actions[0]["elements"]}
    approve, reject = buttons["promotion.approve"], buttons["promotion.reject"]
    assert approve["style"] == "primary" and reject["style"] == "danger"
    assert approve["value"] == reject["value"] == context["promotion_id"]
    assert approve["text"]["text"] == "Approve" and reject["text"]["text"] == "Reject"
    assert any(e.get("url") == context["promotion_url"] for e in actions[0]["elements"])


def test_decided_promotion_messages_have_no_buttons() -> None:
    for event in ("promotion.approved", "promotion.rejected", "promotion.expired"):
        message = render(event, "slack", default_template(event, "slack"), sample(event))
        assert message.payload is not None
        elements = [
            e for b in message.payload["blocks"] if b["type"] == "actions" for e in b["elements"]
        ]
        assert not any("action_id" in e and "value" in e for e in elements)


def test_environment_awaiting_approval_slack_message_has_buttons_until_decided() -> None:
    event = "environment.awaiting_approval"
    context = sample(event) | {
        "provision_id": "3b9e4c1a-0000-4000-8000-000000000002",
        "provision_url": "https://idp.example.com/provisions/3b9e",
        "estimate": "1240.00",
        "currency": "USD",
        "approvers_needed": 2,
    }
    context.pop("outcome", None)
    message = render(event, "slack", default_template(event, "slack"), context)
    assert message.payload is not None
    assert message.payload["blocks"][0]["text"]["text"].startswith(":hourglass")
    [actions] = [b for b in message.payload["blocks"] if b["type"] == "actions"]
    assert actions["block_id"] == f"provision-{context['provision_id']}"
    approve, reject, link = actions["elements"]
    assert (approve["action_id"], approve["value"]) == (
        "provision.approve",
        context["provision_id"],
    )
    assert (reject["action_id"], reject["value"]) == ("provision.reject", context["provision_id"])
    assert link["url"] == context["provision_url"]
    dumped = json.dumps(message.payload)
    assert "1240.00 USD a month" in dumped and context["provision_id"] in dumped
    # once decided, the message says how and keeps only the link
    decided = render(
        event,
        "slack",
        default_template(event, "slack"),
        context | {"outcome": "approved by Bob (Slack)", "decided_by": "Bob (Slack)"},
    )
    assert decided.payload is not None
    [after] = [b for b in decided.payload["blocks"] if b["type"] == "actions"]
    assert [e.get("action_id") for e in after["elements"]] == ["provision.open"]
    assert "approved by Bob (Slack)" in json.dumps(decided.payload)


def test_environment_destroyed_lists_the_resources() -> None:
    event = "environment.destroyed"
    context = {
        "environment": "pr-42",
        "reason": "time to live ran out",
        "resources": ["db", "cache"],
    }
    mail = render(event, "email", default_template(event, "email"), context)
    assert mail.subject == "Environment pr-42 was destroyed"
    assert "- db" in mail.text and "- cache" in mail.text and "time to live ran out" in mail.text
    slack = render(event, "slack", default_template(event, "slack"), context)
    assert slack.payload is not None
    assert "• cache" in json.dumps(slack.payload, ensure_ascii=False)
    hook = render(event, "webhook", default_template(event, "webhook"), context)
    assert hook.payload is not None and hook.payload["data"]["resources"] == ["db", "cache"]


def test_html_is_escaped_and_json_keeps_the_raw_string() -> None:
    evil = '<script>alert("x")</script> & more'
    context = {"title": "Hello", "message": evil}
    mail = render("custom", "email", default_template("custom", "email"), context)
    assert mail.html and "<script>" not in mail.html
    assert "&lt;script&gt;" in mail.html and "&amp; more" in mail.html
    assert evil in mail.text  # plain text is not HTML
    hook = render("custom", "webhook", default_template("custom", "webhook"), context)
    assert hook.payload is not None and hook.payload["data"]["message"] == evil
    slack = render("custom", "slack", default_template("custom", "slack"), context)
    assert slack.payload is not None
    section = slack.payload["blocks"][1]["text"]["text"]
    assert section == '&lt;script&gt;alert("x")&lt;/script&gt; &amp; more'  # Slack mrkdwn


def test_a_value_cannot_break_out_of_the_json() -> None:
    context = {"title": 'a", "injected": true, "x": "', "message": "line\nbreak \\ \u2028"}
    for ctype in ("slack", "webhook"):
        message = render("custom", ctype, default_template("custom", ctype), context)
        assert message.payload is not None and "injected" not in message.payload
    hook = render("custom", "webhook", default_template("custom", "webhook"), context)
    assert hook.payload is not None and hook.payload["data"] == {**context, "url": None}


def test_optional_variables_are_guarded() -> None:
    bare = {"title": "T", "message": "M"}
    slack = render("custom", "slack", default_template("custom", "slack"), bare)
    assert slack.payload is not None
    assert not [b for b in slack.payload["blocks"] if b["type"] == "actions"]
    linked = render(
        "custom", "slack", default_template("custom", "slack"), bare | {"url": "https://x.test"}
    )
    assert linked.payload is not None and "https://x.test" in json.dumps(linked.payload)


def test_environment_resources_as_mapping_or_list() -> None:
    source = default_template("environment.provisioned", "email")
    mapping = {"environment": "staging", "resources": {"db": "pg-1", "bucket": {"name": "b"}}}
    text = render("environment.provisioned", "email", source, mapping).text
    assert "- db: pg-1" in text and '- bucket: {"name": "b"}' in text
    listed = {"environment": "staging", "resources": ["db", "cache"]}
    assert "- cache" in render("environment.provisioned", "email", source, listed).text


def test_budget_shows_the_share_used() -> None:
    context = {"scope": "team-a", "budget": 200, "spent": 250, "currency": "EUR"}
    message = render(
        "budget.exceeded", "email", default_template("budget.exceeded", "email"), context
    )
    assert "Used: 125%" in message.text and "250 EUR" in (message.subject or "")


def test_common_variables_are_supplied() -> None:
    body = '{"e": {{ event | tojson }}, "p": {{ platform_url | tojson }}}'
    message = render(
        "custom", "webhook", webhook(body), {"event": "forged"}, platform_url=PLATFORM + "/"
    )
    assert message.payload == {"e": "custom", "p": PLATFORM}
    check_template("custom", "webhook", webhook(body))


# -- checking overrides ---------------------------------------------------------------------


def test_undeclared_variable_is_refused() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_template(
            "pipeline.failed",
            "webhook",
            webhook('{"a": {{ no_such_variable | tojson }}, "b": {{ other | tojson }}}'),
        )
    assert caught.value.status_code == 422
    assert caught.value.details["undeclared"] == ["no_such_variable", "other"]
    assert "pipeline" in caught.value.details["declared"]
    assert "no_such_variable" in caught.value.message


def test_loop_and_set_names_are_not_variables() -> None:
    body = (
        "{% set who = requested_by | default('someone') %}"
        '{"n": {{ range(3) | list | length }}, "w": {{ who | tojson }},'
        ' "l": [{% for x in [1, 2] %}{{ loop.index }}{{ "," if not loop.last }}{% endfor %}]}'
    )
    check_template("promotion.approved", "webhook", webhook(body))


def test_syntax_error_names_the_part_and_line() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_template("custom", "webhook", webhook('{\n  "a": 1,\n  {% if %}\n}'))
    assert caught.value.details["part"] == "body" and caught.value.details["line"] == 3
    assert "line 3" in caught.value.message
    with pytest.raises(ValidationFailed) as caught:
        check_template("custom", "email", email("{{ title }}", "<p>ok</p>", "a\n{{ title"))
    assert caught.value.details["part"] == "text_body" and caught.value.details["line"] == 2


def test_email_needs_every_part() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_template("custom", "email", email("{{ title }}", "<p>{{ message }}</p>", None))
    assert caught.value.details == {"missing": ["text_body"]}
    with pytest.raises(ValidationFailed):
        check_template("custom", "email", email("  ", "<p>{{ message }}</p>", "{{ message }}"))
    check_template("custom", "email", email("{{ title }}", "<p>{{ message }}</p>", "{{ message }}"))


def test_slack_and_webhook_take_a_body_only() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_template("custom", "slack", TemplateSource("{{ title }}", '{"text": "x"}', None))
    assert caught.value.details == {"unexpected": ["subject"]}
    with pytest.raises(ValidationFailed):
        check_template("custom", "webhook", webhook("   "))


def test_unknown_event_or_channel_type_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        check_template("no.such.event", "slack", webhook('{"text": "x"}'))
    with pytest.raises(ValidationFailed):
        check_template("custom", "sms", webhook('{"text": "x"}'))


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("webhook", "not json {{ title }}"),
        ("webhook", '["a list", {{ title | tojson }}]'),
        ("webhook", '{"title": {{ title }}}'),  # unquoted: only tojson makes a JSON string
        ("slack", '{"attachments": []}'),
        ("slack", '{"text": {{ title | tojson }}, "blocks": "nope"}'),
    ],
)
def test_output_that_is_not_a_json_object_is_refused(ctype: str, body: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_template("custom", ctype, webhook(body))
    assert caught.value.details["part"] == "body"


def test_placeholder_type_errors_do_not_refuse_a_template() -> None:
    # With real numbers this renders; the check's placeholder strings cannot add up.
    body = '{"minutes": {{ duration_seconds // 60 }}}'
    check_template("pipeline.succeeded", "webhook", webhook(body))
    context = {"pipeline": "p", "service": "s", "run_id": "r", "duration_seconds": 600}
    message = render("pipeline.succeeded", "webhook", webhook(body), context)
    assert message.payload == {"minutes": 10}


# -- the sandbox ----------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ title['__class__'] }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ title.__class__.__base__.__subclasses__() }}",
    "{{ (title|attr('__class__')) }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% set x = title.upper.__self__ %}{{ x }}",
    "{{ title.format.__globals__ }}",
]


@pytest.mark.parametrize("expression", ESCAPES)
def test_sandbox_refuses_private_attributes(expression: str) -> None:
    body = '{"text": {{ (' + repr(expression) + ") | tojson }}}"  # the literal is harmless
    check_template("custom", "slack", webhook(body))
    source = email("{{ title }}", "<p>" + expression + "</p>", "{{ message }}")
    with pytest.raises((ValidationFailed, RenderError)) as caught:
        check_template("custom", "email", source)
        render("custom", "email", source, {"title": "t", "message": "m"})
    error = caught.value
    text = error.message + json.dumps(getattr(error, "details", None), default=str)
    assert "<class" not in text and "<function" not in text and "module" not in text


@pytest.mark.parametrize("expression", ESCAPES)
def test_sandbox_refuses_at_render_time_too(expression: str) -> None:
    # An override saved before a check existed still cannot get out when rendered.
    source = email("{{ title }}", "<p>" + expression + "</p>", "{{ message }}")
    with pytest.raises(RenderError) as caught:
        render("custom", "email", source, {"title": "t", "message": "m"})
    assert "unsafe" in caught.value.message or "undefined" in caught.value.message
    assert "<class" not in caught.value.message and "<function" not in caught.value.message


def test_sandbox_refuses_mutation_and_huge_values() -> None:
    for body in (
        '{% set l = [] %}{{ l.append(1) }}{"text": "x"}',
        "{{ 'x' * 100000000 }}",
        '{% for i in range(100000) %}{{ "0123456789" }}{% endfor %}',
    ):
        with pytest.raises(ValidationFailed):
            check_template("custom", "webhook", webhook(body))
        with pytest.raises(RenderError):
            render("custom", "webhook", webhook(body), {"title": "t", "message": "m"})


# -- render errors --------------------------------------------------------------------------


def test_a_missing_variable_names_itself_and_the_line() -> None:
    source = default_template("pipeline.failed", "email")
    with pytest.raises(RenderError) as caught:
        render("pipeline.failed", "email", source, {"pipeline": "p", "run_id": "r"})
    message = caught.value.message
    assert message.startswith("template pipeline.failed/email: ")
    assert "'service' is undefined" in message and "line 1 of subject" in message
    override = email("Hi", "<p>{{ title }}</p>\n<p>{{ message }}</p>", "{{ title }}")
    with pytest.raises(RenderError) as caught:
        render("custom", "email", override, {"title": "t"})
    assert caught.value.message == (
        "template custom/email: 'message' is undefined (line 2 of body)"
    )
    assert caught.value.part == "body" and caught.value.line == 2


def test_a_missing_variable_inside_tojson_is_still_named() -> None:
    with pytest.raises(RenderError) as caught:
        render("custom", "webhook", webhook('{"t": {{ title | tojson }}}'), {})
    assert "'title' is undefined" in caught.value.message


def test_errors_at_render_time_become_render_errors() -> None:
    context = {"pipeline": "p", "service": "s", "run_id": "r", "duration_seconds": "soon"}
    body = '{"m": {{ duration_seconds // 60 }}}'
    with pytest.raises(RenderError) as caught:
        render("pipeline.succeeded", "webhook", webhook(body), context)
    assert "TypeError" in caught.value.message
    with pytest.raises(RenderError, match="not valid JSON"):
        render("custom", "webhook", webhook("{{ title }}"), {"title": "plain", "message": "m"})
    with pytest.raises(RenderError, match="syntax error"):
        render("custom", "webhook", webhook("{% if %}"), {})
    with pytest.raises(RenderError, match="no text_body"):
        render("custom", "email", email("s", "b", None), {"title": "t", "message": "m"})
    with pytest.raises(RenderError, match="unknown event"):
        render("nope", "slack", webhook("{}"), {})
    with pytest.raises(RenderError, match="subject rendered empty"):
        render("custom", "email", email("{{ '' }}", "b", "t"), {"title": "t", "message": "m"})


def test_subject_is_one_line() -> None:
    source = email("{{ title }}\n\n  more", "<p>x</p>", "x")
    message = render("custom", "email", source, {"title": "A\nB", "message": "m"})
    assert message.subject == "A B more"


def test_slack_text_falls_back_to_the_blocks() -> None:
    section = '{"type": "section", "text": {"type": "mrkdwn", "text": {{ title | tojson }}}}'
    body = '{"blocks": [' + section + "]}"
    message = render("custom", "slack", webhook(body), {"title": "Hi", "message": "m"})
    assert message.text == "Hi"


def test_repeated_renders_reuse_the_compiled_template() -> None:
    from core.notifications.rendering import _compile

    source = default_template("pipeline.started", "slack")
    context = sample("pipeline.started")
    render("pipeline.started", "slack", source, context)
    hits = _compile.cache_info().hits
    render("pipeline.started", "slack", source, context)
    assert _compile.cache_info().hits == hits + 1
