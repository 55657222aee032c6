"""Reading request headers in pure functions that take a plain mapping (tests pass dicts,
the API Starlette's Headers)."""

from __future__ import annotations

from collections.abc import Mapping


class HeaderView:
    """Case-insensitive view of a header mapping; values come stripped."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = {str(k).lower(): str(v) for k, v in headers.items()}

    def get(self, name: str) -> str | None:
        value = self._items.get(name.lower())
        return value.strip() if value is not None else None
