import uuid
from datetime import UTC, datetime

import pytest

from core.errors import BadRequest
from core.pagination import MAX_LIMIT, PageRequest, decode_cursor, encode_cursor


def test_cursor_round_trip() -> None:
    values = [datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC), uuid.uuid4(), "name", 7]
    cursor = encode_cursor(values)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor, 4) == values


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", encode_cursor([1, 2])])
def test_bad_cursor(cursor: str) -> None:
    with pytest.raises(BadRequest, match="cursor is not valid"):
        decode_cursor(cursor, 3)


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": MAX_LIMIT + 1}, {"offset": -1}, {"cursor": "x", "offset": 0}],
)
def test_bad_page_request(kwargs: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        PageRequest(**kwargs)  # type: ignore[arg-type]
