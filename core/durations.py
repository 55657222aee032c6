"""Human durations ("15m", "7d", "1h30m", "90") used by settings and temporal.yaml."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def _seconds(seconds: float) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("a duration must be shorter than 999,999,999 days") from None


def parse_duration(value: Any) -> timedelta:
    """Parse a duration: a timedelta, a number of seconds, or text such as "15m" or "1h30m"."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text such as 15m, 1h30m, 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _seconds(value)
    if not isinstance(value, str):
        raise ValueError("a duration is a number of seconds or text such as 15m, 1h30m, 7d")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _seconds(float(text))
    pos, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; use e.g. 30s, 15m, 1h30m, 7d")
    return _seconds(seconds)


def format_duration(value: timedelta) -> str:
    """The shortest text that `parse_duration` reads back as `value`."""
    total = value.total_seconds()
    if total == 0:
        return "0s"
    if total != int(total):
        return f"{round(total * 1000)}ms"
    out, rest = [], int(total)
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
