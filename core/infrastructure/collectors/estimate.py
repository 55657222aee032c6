"""The `estimate` collector: the inventory at the price catalog (`costs.estimate_day`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date

from core.db.engine import transaction
from core.infrastructure.collectors.base import Collected, CollectorContext, Sessions
from core.infrastructure.costs import estimate_day
from core.models.infrastructure import Resource


class EstimateCollector:
    def __init__(self, context: CollectorContext) -> None:
        self._catalog = context.catalog

    async def day(
        self, sessions: Sessions, day: date, providers: Sequence[uuid.UUID] | None
    ) -> Collected:
        async with transaction(sessions) as session:
            if providers is None:
                return Collected(await estimate_day(session, self._catalog, day), providers=None)
            scope = list(providers)
            where = Resource.provider_id.in_(scope)
            return Collected(await estimate_day(session, self._catalog, day, where), scope)
