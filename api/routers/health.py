"""Liveness and readiness. Public: load balancers and `idp dev` call them without credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import State
from api.state import AppState
from core import __version__
from core.db.migrate import schema_status
from core.errors import Unavailable

router = APIRouter(prefix="/api/health", tags=["system"])

CHECK_TIMEOUT = 3.0


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Check(BaseModel):
    status: Literal["ok", "unavailable"]
    latency_ms: float
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Check]


@router.get("", response_model=Liveness, summary="Liveness: the API process answers")
async def liveness() -> Liveness:
    return Liveness(version=__version__)


async def _check_database(state: AppState) -> str | None:
    async with state.engine.connect() as conn:
        return (await schema_status(conn)).problem


async def _check_temporal(state: AppState) -> str | None:
    client = await state.temporal.client()
    await client.service_client.check_health(timeout=timedelta(seconds=CHECK_TIMEOUT))
    return None


async def _run(check: Callable[[AppState], Awaitable[str | None]], state: AppState) -> Check:
    started = time.perf_counter()
    try:
        problem = await asyncio.wait_for(check(state), CHECK_TIMEOUT)
    except Unavailable as exc:
        problem = exc.message
    except TimeoutError:
        problem = f"no answer within {CHECK_TIMEOUT:g}s"
    except Exception as exc:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(
            ": "
        )
    latency = round((time.perf_counter() - started) * 1000, 2)
    return Check(status="unavailable" if problem else "ok", latency_ms=latency, detail=problem)


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: the database (at the latest migration) and Temporal answer",
    responses={503: {"model": Readiness, "description": "A dependency is unavailable"}},
)
async def readiness(state: State) -> JSONResponse:
    database, temporal = await asyncio.gather(
        _run(_check_database, state), _run(_check_temporal, state)
    )
    checks = {"database": database, "temporal": temporal}
    ok = all(c.status == "ok" for c in checks.values())
    body = Readiness(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
