"""Pagination for every list endpoint: `?limit=&cursor=` (keyset) or `?limit=&offset=`.

Responses carry the page's items and a `next` link that keeps the other query parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel

from core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest

Item = TypeVar("Item")
Out = TypeVar("Out")


def page_params(
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page"),
    cursor: str | None = Query(
        None, description="Opaque cursor from a previous page's next_cursor"
    ),
    offset: int | None = Query(None, ge=0, description="Skip this many items (instead of cursor)"),
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor, offset=offset)


class PageOut(BaseModel, Generic[Out]):
    items: list[Out]
    limit: int
    next_cursor: str | None = None
    next_offset: int | None = None
    next: str | None = None


def page_response(
    request: Request, page: Page[Item], convert: Callable[[Item], Out]
) -> PageOut[Out]:
    """Convert a core `Page` to the response model, with an absolute `next` link."""
    next_link = None
    if page.next_cursor is not None:
        params = {k: v for k, v in request.query_params.items() if k not in ("cursor", "offset")}
        next_link = str(request.url.replace_query_params(**params, cursor=page.next_cursor))
    elif page.next_offset is not None:
        params = {k: v for k, v in request.query_params.items() if k != "offset"}
        next_link = str(request.url.replace_query_params(**params, offset=page.next_offset))
    return PageOut[Out](
        items=[convert(item) for item in page.items],
        limit=page.limit,
        next_cursor=page.next_cursor,
        next_offset=page.next_offset,
        next=next_link,
    )
