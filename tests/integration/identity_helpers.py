"""Helpers for identity tests: an app on the test database and users made through services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from api.app import create_app
from core.db.engine import create_engine, session_factory, transaction
from core.identity.users import UserService
from core.local_secrets import with_local_secrets
from core.settings import Settings
from core.topology import Topology
from tests.helpers import http_client

PASSWORD = "correct horse battery staple"
JWT_SECRET = "test-jwt-secret-" + "x" * 32


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    async def user(
        self, role: str | None = None, *, password: str = PASSWORD
    ) -> tuple[uuid.UUID, str]:
        """A new active user (with a global role), committed; returns its id and email."""
        email = f"u-{uuid.uuid4().hex[:10]}@example.com"
        async with self.session() as session:
            users = UserService(session)
            user = await users.create(email, "Test User", password)
            if role:
                await users.grant_role(user, role)
            return user.id, email

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A committed unit of work on the app's database, outside any request."""
        engine = create_engine(self.settings.effective_database_url)
        try:
            async with transaction(session_factory(engine)) as session:
                yield session
        finally:
            await engine.dispose()

    async def fetch(self, stmt: Any) -> list[Any]:
        async with self.session() as session:
            return list((await session.scalars(stmt)).all())

    async def run_sql(self, statement: Any) -> None:
        async with self.session() as session:
            await session.execute(statement)

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, object]:
        response = await self.client.post(
            "/auth/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def token(self, role: str | None = None) -> tuple[uuid.UUID, dict[str, str]]:
        """A new user's id and the Authorization header of its fresh login."""
        user_id, email = await self.user(role)
        tokens = await self.login(email)
        return user_id, {"Authorization": f"Bearer {tokens['access_token']}"}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is `status` in the one error shape (with `code`); returns the error body."""
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    if code:
        assert body["code"] == code
    return dict(body)


@asynccontextmanager
async def running_api(
    settings: Settings, topology: Topology, database_url: str
) -> AsyncIterator[Api]:
    settings = with_local_secrets(  # the encryption key the app will use
        settings.model_copy(
            update={"database_url": database_url, "jwt_secret": SecretStr(JWT_SECRET)}
        )
    )
    app = create_app(settings, topology)
    async with http_client(app) as client:
        yield Api(app, client, settings)
