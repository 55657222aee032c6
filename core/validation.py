"""Pydantic validation errors as the API's one 422 shape: every problem, by field path."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)


def field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """`triggers.cron[1]` from the prefix and pydantic's location."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_model(model: type[M], data: Any, prefix: str, what: str | None = None) -> M:
    """`data` as `model`, or ValidationFailed listing every problem (`details`: field and
    message), the first one in the message after `what` (default: "<prefix> is not valid")."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {
                "field": field_path(prefix, tuple(e["loc"])),
                "message": str(e["msg"]).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        first = details[0]
        raise ValidationFailed(
            f"{what or f'{prefix} is not valid'}: {first['field']}: {first['message']}",
            details=details,
        ) from None
