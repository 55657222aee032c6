"""Request dependencies: app state, the database session (committed at the edge), Temporal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.state import AppState
from core.db.engine import transaction


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.idp
    return state


async def _session(state: Annotated[AppState, Depends(app_state)]) -> AsyncIterator[AsyncSession]:
    """One session per request; it commits after the route returns and before the response
    is sent (scope="function"), and rolls back if the route raised."""
    async with transaction(state.sessions) as session:
        yield session


async def _temporal(state: Annotated[AppState, Depends(app_state)]) -> Client:
    return await state.temporal.client()


State = Annotated[AppState, Depends(app_state)]
DbSession = Annotated[AsyncSession, Depends(_session, scope="function")]
TemporalClient = Annotated[Client, Depends(_temporal)]
