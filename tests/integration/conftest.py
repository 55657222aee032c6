"""Fixtures for integration tests that call the API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.settings import Settings
from core.topology import Topology
from tests.integration.identity_helpers import Api, running_api


@pytest.fixture
async def api(settings: Settings, topology: Topology, database_url: str) -> AsyncIterator[Api]:
    """The app on the session's test database (each backend), with an HTTP client."""
    async with running_api(settings, topology, database_url) as running:
        yield running
