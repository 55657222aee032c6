"""Stable pagination for every list: a limit plus either an opaque cursor (keyset) or an offset.

Keyset pages stay correct while rows are being added; offsets are there for jumping to a page.
The order always ends with a unique column (the id), so no row is skipped or repeated.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core.errors import BadRequest

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_OFFSET = 1_000_000_000  # beyond any list here, and within every database's integer


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    offset: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
        if self.cursor is not None and self.offset is not None:
            raise BadRequest("give either cursor or offset, not both")
        if self.offset is not None and not 0 <= self.offset <= MAX_OFFSET:
            raise BadRequest(f"offset must be between 0 and {MAX_OFFSET:,}")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    limit: int
    next_cursor: str | None = None
    next_offset: int | None = None


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "dt" in value:
            return datetime.fromisoformat(value["dt"])
        if "uuid" in value:
            return uuid.UUID(value["uuid"])
    return value


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_encode_value(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != width:
            raise ValueError
        return [_decode_value(v) for v in values]
    except (ValueError, binascii.Error, UnicodeDecodeError, KeyError, TypeError):
        raise BadRequest("cursor is not valid for this list; start again without it") from None


def _after(order: Sequence[ColumnElement[Any]], values: Sequence[Any], descending: bool) -> Any:
    """Rows strictly after `values` in the order: (a > x) or (a = x and b > y) ...

    The redundant `a >= x` in front lets the database start its index scan at the cursor
    instead of filtering every earlier row (a page deep in a list costs what the first does)."""
    clauses = []
    for i, column in enumerate(order):
        equal = [order[j] == values[j] for j in range(i)]
        beyond = column < values[i] if descending else column > values[i]
        clauses.append(and_(*equal, beyond))
    first = order[0] <= values[0] if descending else order[0] >= values[0]
    return and_(first, or_(*clauses))


async def paginate(
    session: AsyncSession,
    stmt: Select[T],
    page: PageRequest,
    *,
    order: Sequence[InstrumentedAttribute[Any]],
    descending: bool = False,
) -> Page[T]:
    """Run `stmt` one page at a time, ordered by `order` (whose last column must be unique)."""
    columns: list[ColumnElement[Any]] = [c.expression for c in order]
    if page.cursor is not None:
        stmt = stmt.where(_after(columns, decode_cursor(page.cursor, len(columns)), descending))
    stmt = stmt.order_by(*(c.desc() if descending else c.asc() for c in columns))
    if page.offset:
        stmt = stmt.offset(page.offset)
    rows = list((await session.scalars(stmt.limit(page.limit + 1))).all())
    more = len(rows) > page.limit
    items = rows[: page.limit]
    if not more:
        return Page(items=items, limit=page.limit)
    if page.offset is not None:
        return Page(items=items, limit=page.limit, next_offset=page.offset + page.limit)
    last = items[-1]
    cursor = encode_cursor([getattr(last, c.key) for c in order])
    return Page(items=items, limit=page.limit, next_cursor=cursor)
