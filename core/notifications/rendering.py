"""Notification templates: the events and their variables, the file templates, checking an
override before it is saved, and rendering a message for one channel type.

Templates are Jinja2, rendered in an immutable sandbox (an override comes from the database
and is untrusted): no attribute starting with `_`, no mutation of values, bounded `*`/`**`
and bounded output. A variable a template uses but the context lacks is an error, not an empty
string; `{% if name is defined %}` still tests for an optional one. The email HTML part is
autoescaped; every other part is plain text or JSON (built with `tojson`).

Besides Jinja's own filters, templates may use `mrkdwn` (escape `&`, `<`, `>` for Slack text,
optionally cut to a length: `error | mrkdwn(2800)`) and `duration` (seconds to `1h 2m 3s`).

A rendering also has a time limit (MAX_RENDER_SECONDS): loops over a context value (a long
commit message, say) are not counted by the `range()` budget, so the template's own code is
traced line by line and stopped at the deadline. Async callers render with `render_async`
and `check_template_async`, on a thread, so the event loop never waits on a template.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Any, NamedTuple

import yaml
from jinja2 import (
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    Undefined,
    meta,
    nodes,
    pass_eval_context,
)
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.errors import ConfigError, NotFound, ValidationFailed
from core.settings import PROJECT_ROOT

TEMPLATES_DIR = PROJECT_ROOT / "templates" / "notifications"
EVENTS_FILE = TEMPLATES_DIR / "events.yaml"

CHANNEL_TYPES: tuple[str, ...] = ("slack", "email", "webhook")
COMMON_VARIABLES: tuple[str, ...] = ("event", "platform_url")

# Limits on what one render may do, whatever the template.
MAX_OUTPUT_CHARS = 512 * 1024
MAX_SEQUENCE_REPEAT = 100_000  # the length `"x" * n` or `[..] * n` may reach
MAX_EXPONENT = 1_000
MAX_LOOP_ITEMS = 10_000  # what every `range()` of one rendering may yield, together
MAX_RENDER_SECONDS = 2.0  # the template code of one part, whatever it loops over

_TEMPLATE_NAME = "<template>"  # the filename Jinja gives frames of a template from a string


@dataclass(frozen=True)
class EventSpec:
    name: str
    description: str
    variables: dict[str, str]  # name -> description (excluding COMMON_VARIABLES)


@dataclass(frozen=True)
class TemplateSource:
    subject: str | None  # email: subject template; slack/webhook: None
    body: str  # slack: the JSON template; email: HTML template; webhook: JSON template
    text_body: str | None  # email: plain-text template; others None


@dataclass(frozen=True)
class RenderedMessage:
    subject: str | None  # email subject
    text: str  # email plain text; slack fallback text; webhook: the JSON as text
    html: str | None  # email HTML
    payload: dict[str, Any] | None  # slack: {"text", "blocks"}; webhook: the object; email: None


class RenderError(Exception):
    """A template did not render; `message` says which template, what and where."""

    def __init__(self, message: str, *, part: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.part = part
        self.line = line


class _OutputError(RenderError):
    """The template rendered, but its output is not what the channel type needs."""


class _OutputTooLarge(SecurityError):
    pass


# -- events -----------------------------------------------------------------------------------


@functools.cache
def events() -> dict[str, EventSpec]:
    """The events notifications are sent for, from templates/notifications/events.yaml."""
    try:
        raw = yaml.safe_load(EVENTS_FILE.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {EVENTS_FILE}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{EVENTS_FILE}: expected a mapping of event name to its description")
    out: dict[str, EventSpec] = {}
    for name, entry in raw.items():
        where = f"{EVENTS_FILE}: event {name!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("description"), str):
            raise ConfigError(f"{where} needs a description")
        variables = entry.get("variables") or {}
        if not isinstance(variables, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
        ):
            raise ConfigError(f"{where}: variables must map each name to a one-line description")
        common = sorted(set(variables) & set(COMMON_VARIABLES))
        if common:
            raise ConfigError(f"{where} declares {', '.join(common)}, which every event has")
        out[str(name)] = EventSpec(str(name), entry["description"], dict(variables))
    return out


def _channel_files(channel_type: str) -> tuple[str | None, str, str | None]:
    if channel_type == "email":
        return "email.subject.j2", "email.html.j2", "email.txt.j2"
    return None, f"{channel_type}.json.j2", None


@functools.cache
def default_template(event: str, channel_type: str) -> TemplateSource:
    """The file template for `event` on `channel_type`."""
    if event not in events():
        raise NotFound(f"no notification event {event!r}", details={"event": event})
    if channel_type not in CHANNEL_TYPES:
        raise NotFound(
            f"no channel type {channel_type!r}; one of {', '.join(CHANNEL_TYPES)}",
            details={"channel_type": channel_type},
        )
    folder = TEMPLATES_DIR / event

    def read(name: str | None) -> str | None:
        if name is None:
            return None
        try:
            return (folder / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(
                f"no {channel_type} template for {event}: {folder / name} is missing",
                details={"event": event, "channel_type": channel_type},
            ) from None

    subject, body, text_body = (read(name) for name in _channel_files(channel_type))
    assert body is not None
    return TemplateSource(subject=subject, body=body, text_body=text_body)


# -- the sandbox ------------------------------------------------------------------------------


def _mrkdwn(value: Any, limit: int | None = None) -> str:
    """Escape text for Slack mrkdwn; cut it to `limit` characters without splitting an entity."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if limit is not None and len(text) > limit:
        cut = text[: max(limit - 1, 0)]
        amp = cut.rfind("&")
        if amp != -1 and ";" not in cut[amp:]:
            cut = cut[:amp]
        text = cut + "…"
    return text


def _duration(value: Any) -> str:
    """Seconds as `1h 2m 3s`; a value that is not a number is shown as it is."""
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined: raises the undefined error
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, bool) or not math.isfinite(seconds):
        return str(value)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest or not parts:
        parts.append(f"{rest}s")
    return " ".join(parts)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with `*` and `**` kept from building huge values."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"an exponent above {MAX_EXPONENT} is not allowed")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(count, int)
                    and len(seq) * count > MAX_SEQUENCE_REPEAT
                ):
                    raise SecurityError(
                        f"repeating a value beyond {MAX_SEQUENCE_REPEAT} items is not allowed"
                    )
        return super().call_binop(context, operator, left, right)


# Items `range()` may still yield in the rendering under way (set by _render_part): nested
# loops multiply, so the budget is one for the whole rendering, not one per loop.
_range_budget: ContextVar[list[int]] = ContextVar("range_budget")


def _bounded_range(*args: int) -> Iterator[int]:
    items = range(*args)
    budget = _range_budget.get([MAX_LOOP_ITEMS])
    if len(items) > budget[0]:
        raise SecurityError(f"loops over more than {MAX_LOOP_ITEMS} items in all are not allowed")
    budget[0] -= len(items)
    return iter(items)


def _environment(*, autoescape: bool) -> _Sandbox:
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.pop("lipsum", None)  # unbounded output for no use in a notification
    env.globals["range"] = _bounded_range
    tojson: Callable[..., Any] = env.filters["tojson"]

    @pass_eval_context
    def strict_tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
        if isinstance(value, Undefined):
            str(value)  # raises "'name' is undefined" rather than "not JSON serializable"
        return tojson(eval_ctx, value, indent)

    env.filters.update(tojson=strict_tojson, mrkdwn=_mrkdwn, duration=_duration)
    return env


_TEXT_ENV = _environment(autoescape=False)
_HTML_ENV = _environment(autoescape=True)
ALLOWED_GLOBALS: frozenset[str] = frozenset(_TEXT_ENV.globals)


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> Template:
    return (_HTML_ENV if html else _TEXT_ENV).from_string(source)


class _Part(NamedTuple):
    name: str  # subject | body | text_body
    source: str | None
    html: bool


def _parts(channel_type: str, source: TemplateSource) -> list[_Part]:
    if channel_type == "email":
        return [
            _Part("subject", source.subject, False),
            _Part("body", source.body, True),
            _Part("text_body", source.text_body, False),
        ]
    return [_Part("body", source.body, False)]


# -- checking an override ---------------------------------------------------------------------


def _unsafe_access(tree: nodes.Template) -> tuple[list[str], int] | None:
    """`x._name` and `x["_name"]` in the template (the sandbox always refuses them): the names,
    and the first line with one."""
    found: dict[str, int] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            name: Any = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        else:
            continue
        if isinstance(name, str) and name.startswith("_"):
            found[name] = min(found.get(name, node.lineno), node.lineno)
    if not found:
        return None
    return sorted(found, key=lambda n: (found[n], n)), min(found.values())


# What rendering with placeholder strings may raise although real values would render.
_PLACEHOLDER_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError, UndefinedError)


def check_template(event: str, channel_type: str, source: TemplateSource) -> None:
    """Refuse (ValidationFailed, 422) a template for `event` on `channel_type` that could not
    work: unknown event or channel type, a missing or extra part, a Jinja syntax error, a
    variable the event does not declare, access to private attributes, or (rendered with a
    placeholder for every variable) Slack or webhook output that is not a JSON object."""
    spec = events().get(event)
    if spec is None:
        raise ValidationFailed(
            f"unknown event {event!r}", details={"event": event, "known": sorted(events())}
        )
    if channel_type not in CHANNEL_TYPES:
        raise ValidationFailed(
            f"unknown channel type {channel_type!r}; one of {', '.join(CHANNEL_TYPES)}",
            details={"channel_type": channel_type, "known": list(CHANNEL_TYPES)},
        )
    where = f"template {event}/{channel_type}"
    parts = _parts(channel_type, source)
    if channel_type == "email":
        missing = [p.name for p in parts if not (p.source and p.source.strip())]
        if missing:
            raise ValidationFailed(
                f"{where} needs a subject, an HTML body and a text_body; missing: "
                + ", ".join(missing),
                details={"missing": missing},
            )
    else:
        if not source.body.strip():
            raise ValidationFailed(f"{where} needs a body", details={"missing": ["body"]})
        extra = [name for name in ("subject", "text_body") if getattr(source, name)]
        if extra:
            raise ValidationFailed(
                f"{where} has only a body; {' and '.join(extra)} apply to email templates",
                details={"unexpected": extra},
            )

    used: set[str] = set()
    for part in parts:
        assert part.source is not None
        env = _HTML_ENV if part.html else _TEXT_ENV
        try:
            tree = env.parse(part.source)
        except TemplateSyntaxError as exc:
            raise ValidationFailed(
                f"{where}: syntax error in {part.name} at line {exc.lineno}: {exc.message}",
                details={"part": part.name, "line": exc.lineno, "error": exc.message},
            ) from None
        unsafe = _unsafe_access(tree)
        if unsafe:
            names = ", ".join(repr(name) for name in unsafe[0])
            error = f"access to {names} is not allowed: templates cannot use names starting with _"
            raise ValidationFailed(
                f"{where}: {error} (line {unsafe[1]} of {part.name})",
                details={"part": part.name, "line": unsafe[1], "error": error},
            )
        used |= meta.find_undeclared_variables(tree)
    declared = set(spec.variables) | set(COMMON_VARIABLES)
    undeclared = sorted(used - declared - ALLOWED_GLOBALS)
    if undeclared:
        raise ValidationFailed(
            f"{where} uses variables {event} does not declare: {', '.join(undeclared)}",
            details={"undeclared": undeclared, "declared": sorted(declared)},
        )

    sample = {name: f"<{name}>" for name in spec.variables}
    try:
        render(event, channel_type, source, sample, platform_url="https://platform.example")
    except _OutputError as exc:
        raise ValidationFailed(
            f"{exc.message} (rendered with a placeholder for every variable)",
            details={"part": exc.part, "line": exc.line, "error": exc.message},
        ) from None
    except RenderError as exc:
        # Placeholders are strings: a template doing arithmetic on a variable or reading its
        # attributes may fail with them and still be right with real values.
        if not isinstance(exc.__cause__, _PLACEHOLDER_ERRORS):
            raise ValidationFailed(
                exc.message, details={"part": exc.part, "line": exc.line, "error": exc.message}
            ) from None


# -- rendering --------------------------------------------------------------------------------


def _template_line(exc: BaseException) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == _TEMPLATE_NAME:
            line = frame.lineno
    return line


def _describe(exc: Exception) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, SecurityError) and type(exc).__module__ == "builtins":
        text = f"{type(exc).__name__}: {text}"
    return text.splitlines()[0]


class _TooSlow(SecurityError):
    pass


def _deadline_tracer(deadline: float) -> Callable[[FrameType, str, Any], Any]:
    """A trace function that follows only the template's own frames (Jinja compiles a
    template to Python code whose frames carry `_TEMPLATE_NAME`) and raises once `deadline`
    (time.monotonic) has passed: every line of a loop body is a check."""

    def in_template(frame: FrameType, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise _TooSlow(f"rendering took longer than {MAX_RENDER_SECONDS:g} s")
        return in_template

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == _TEMPLATE_NAME:
            return in_template(frame, event, arg)
        return None

    return on_call


def _render_part(where: str, part: _Part, context: Mapping[str, Any]) -> str:
    assert part.source is not None
    budget = _range_budget.set([MAX_LOOP_ITEMS])
    previous_trace = sys.gettrace()
    try:
        template = _compile(part.source, part.html)
        chunks: list[str] = []
        size = 0
        sys.settrace(_deadline_tracer(time.monotonic() + MAX_RENDER_SECONDS))
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise _OutputTooLarge(f"the output is longer than {MAX_OUTPUT_CHARS} characters")
            chunks.append(chunk)
    except Exception as exc:
        line = exc.lineno if isinstance(exc, TemplateSyntaxError) else _template_line(exc)
        at = f" (line {line} of {part.name})" if line else f" (in {part.name})"
        raise RenderError(f"{where}: {_describe(exc)}{at}", part=part.name, line=line) from exc
    finally:
        sys.settrace(previous_trace)
        _range_budget.reset(budget)
    return "".join(chunks)


def _json_object(where: str, output: str) -> dict[str, Any]:
    try:
        value = json.loads(output)
    except json.JSONDecodeError as exc:
        raise _OutputError(
            f"{where}: the output is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno} of the rendered body)",
            part="body",
        ) from None
    if not isinstance(value, dict):
        raise _OutputError(
            f"{where}: the output must be a JSON object, not {type(value).__name__}", part="body"
        )
    return value


def _block_texts(blocks: Iterable[Any]) -> str:
    """A fallback text from the blocks' own texts, for a Slack message without "text"."""
    lines = []
    for block in blocks:
        text = block.get("text") if isinstance(block, dict) else None
        if isinstance(text, dict) and isinstance(text.get("text"), str):
            lines.append(text["text"])
    return "\n".join(lines)


def render(
    event: str,
    channel_type: str,
    source: TemplateSource,
    context: Mapping[str, Any],
    *,
    platform_url: str = "",
) -> RenderedMessage:
    """Render `source` (for `event` on `channel_type`) with `context`, plus `event` and
    `platform_url`. Any failure, including output the channel cannot send, is a RenderError."""
    where = f"template {event}/{channel_type}"
    if event not in events():
        raise RenderError(f"{where}: unknown event {event!r}")
    if channel_type not in CHANNEL_TYPES:
        raise RenderError(f"{where}: unknown channel type {channel_type!r}")
    parts = _parts(channel_type, source)
    missing = [p.name for p in parts if p.source is None]
    if missing:
        raise RenderError(f"{where}: the template has no {' or '.join(missing)}")
    values = dict(context)
    base = platform_url or str(values.get("platform_url") or "")
    values.update(event=event, platform_url=base.rstrip("/"))
    out = {part.name: _render_part(where, part, values) for part in parts}

    if channel_type == "email":
        subject = " ".join(out["subject"].split())
        if not subject:
            raise _OutputError(f"{where}: the subject rendered empty", part="subject")
        return RenderedMessage(
            subject=subject,
            text=out["text_body"].strip() + "\n",
            html=out["body"].strip() + "\n",
            payload=None,
        )
    payload = _json_object(where, out["body"])
    if channel_type == "webhook":
        return RenderedMessage(subject=None, text=out["body"].strip(), html=None, payload=payload)
    text, blocks = payload.get("text"), payload.get("blocks")
    if text is None and blocks is None:
        raise _OutputError(f'{where}: a Slack message needs "text" or "blocks"', part="body")
    if text is not None and not isinstance(text, str):
        raise _OutputError(f'{where}: "text" must be a string', part="body")
    if blocks is not None and not (
        isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks)
    ):
        raise _OutputError(f'{where}: "blocks" must be a list of objects', part="body")
    return RenderedMessage(
        subject=None, text=text or _block_texts(blocks or []), html=None, payload=payload
    )


async def render_async(
    event: str,
    channel_type: str,
    source: TemplateSource,
    context: Mapping[str, Any],
    *,
    platform_url: str = "",
) -> RenderedMessage:
    """`render` on a thread: the caller's event loop keeps serving while a template runs."""
    return await asyncio.to_thread(
        render, event, channel_type, source, context, platform_url=platform_url
    )


async def check_template_async(event: str, channel_type: str, source: TemplateSource) -> None:
    """`check_template` on a thread (it renders the template once)."""
    await asyncio.to_thread(check_template, event, channel_type, source)
