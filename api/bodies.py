"""Request bodies read within a cap, so that a public route (webhooks, Slack) never holds more
than the cap in memory for a caller it has not yet authenticated: a declared Content-Length
over the cap is refused before anything is read, a streamed body as soon as it passes it."""

from __future__ import annotations

from fastapi import Request

from core.errors import PayloadTooLarge

PUBLIC_BODY_LIMIT = 5 * 1024 * 1024  # webhooks and Slack interactions: far above real ones


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than {limit // 1024} KiB", details={"limit_bytes": limit}
    )


async def read_capped(request: Request, limit: int = PUBLIC_BODY_LIMIT) -> bytes:
    """The whole body, or PayloadTooLarge (413) once it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
