"""The floor for API latency: a bare Starlette app on the same server (uvicorn)."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def health(request: object) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/api/health", health)])
