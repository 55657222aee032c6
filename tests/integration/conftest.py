"""Fixtures for integration tests that call the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from core.temporal import policies
from core.topology import Topology
from tests.integration.identity_helpers import Api, running_api
from tests.integration.promotion_helpers import PromotionStack, promotion_stack


@pytest.fixture
async def api(settings: Settings, topology: Topology, database_url: str) -> AsyncIterator[Api]:
    """The app on the session's test database (each backend), with an HTTP client."""
    async with running_api(settings, topology, database_url) as running:
        yield running


@pytest.fixture
async def promotions(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
) -> AsyncIterator[PromotionStack]:
    """The API, a promotions worker and a Slack stand-in on the session's test database."""
    policies.install(topology)
    async with promotion_stack(
        settings, topology, database_url, temporal_env.client, tmp_path
    ) as running:
        yield running
