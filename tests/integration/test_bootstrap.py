"""The first admin from IDP_ADMIN_EMAIL / IDP_ADMIN_PASSWORD on first start, and only then."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr

from core.db import migrate
from core.settings import Settings
from core.topology import Topology
from tests.integration.identity_helpers import running_api

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


@pytest.mark.parametrize("fresh_database_url", BACKENDS, indirect=True)
async def test_first_start_creates_the_admin_once(
    settings: Settings, topology: Topology, fresh_database_url: str
) -> None:
    migrate.upgrade(fresh_database_url)
    first = settings.model_copy(
        update={
            "admin_email": "Boss@Example.com",
            "admin_password": SecretStr("first admin passphrase"),
        }
    )
    async with running_api(first, topology, fresh_database_url) as api:
        login = await api.client.post(
            "/auth/login", json={"email": "boss@example.com", "password": "first admin passphrase"}
        )
        assert login.status_code == 200, login.text
        me = await api.client.get(
            "/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
        )
        assert [r["role"] for r in me.json()["roles"]] == ["admin"]

    later = settings.model_copy(
        update={
            "admin_email": "other@example.com",
            "admin_password": SecretStr("another passphrase!"),
        }
    )
    async with running_api(later, topology, fresh_database_url) as api:
        response = await api.client.post(
            "/auth/login", json={"email": "other@example.com", "password": "another passphrase!"}
        )
        assert response.status_code == 401  # users exist: the settings create no one
