"""Cost collection: three simulated days on the time-skipping server give three days of
records (a rerun of a day changes no totals), and budgets over their amount are reported
once a month; the daily schedule backfilled on the dev server collects the days it covers,
each run summarised and searchable; a provider still failing after its retries fails the run
(naming it) once the others' costs are stored."""

from __future__ import annotations

import calendar
import itertools
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.costs import CostActivities
from core.db.engine import create_engine, session_factory
from core.infrastructure.cost_messages import CostCollectionInput, CostCollectionResult
from core.infrastructure.costs import PriceCatalog
from core.models.infrastructure import Budget, CostRecord, Provider, Resource
from core.temporal import policies
from core.temporal.converter import data_converter
from core.temporal.interceptors import ContextPropagationInterceptor
from core.topology import Retry, Schedule, Topology
from tests.helpers import add_search_attributes, wait_until
from tests.integration.identity_helpers import Api
from tests.integration.operator_view import activity_summaries, executions
from tests.integration.test_cost_collectors import NAMESPACE, provider, records, resources
from tests.standins.opencost import OpenCostStandin, allocation
from workers.runner import sandbox_runner
from workers.schedules import backfill, schedule_id, sync_schedules
from workflows.cost_collection import CostCollectionWorkflow


@pytest.fixture(autouse=True)
def _topology(topology: Topology) -> Iterator[None]:
    policies.install(topology)
    yield


async def _inventory(api: Api, created: datetime) -> tuple[list[uuid.UUID], uuid.UUID]:
    """A provider with a small database, a bucket and a resource the catalog does not know
    (its own monthly cost); a team `web` owning them. Returns the resource ids, the team id."""
    _, admin = await api.token("admin")
    org = await api.client.post(
        "/organizations", json={"name": "O", "slug": f"o-{uuid.uuid4().hex[:8]}"}, headers=admin
    )
    slug = f"web-{uuid.uuid4().hex[:6]}"
    team = await api.client.post(
        "/teams", json={"org_id": org.json()["id"], "name": "Web", "slug": slug}, headers=admin
    )
    async with api.session() as session:
        provider = Provider(org_id=uuid.UUID(org.json()["id"]), name="aws", type="aws")
        session.add(provider)
        await session.flush()
        tags = {"team": slug}
        rows = [
            Resource(
                provider_id=provider.id,
                type="aws:rds/instance:Instance",
                identifier=f"db-{uuid.uuid4().hex}",
                name="db",
                tags=tags,
                properties={"instanceClass": "db.t4g.micro"},
                created_at=created,
            ),
            Resource(
                provider_id=provider.id,
                type="aws:s3/bucketV2:BucketV2",
                identifier=f"b-{uuid.uuid4().hex}",
                name="bucket",
                tags=tags,
                created_at=created,
            ),
            Resource(
                provider_id=provider.id,
                type="example:thing:Thing",
                identifier=f"t-{uuid.uuid4().hex}",
                name="thing",
                tags=tags,
                cost_monthly=Decimal("30"),
                created_at=created,
            ),
        ]
        session.add_all(rows)
        session.add(
            Budget(
                org_id=provider.org_id,
                team_id=uuid.UUID(team.json()["id"]),
                amount=Decimal("2"),
            )
        )
        await session.flush()
        return [r.id for r in rows], uuid.UUID(team.json()["id"])


def expected(day: date) -> Decimal:
    days = calendar.monthrange(day.year, day.month)[1]
    return sum(
        ((Decimal(m) / days).quantize(Decimal("0.0001")) for m in ("11.68", "2.30", "30")),
        Decimal(0),
    )


async def _totals(api: Api, ids: list[uuid.UUID]) -> dict[date, tuple[int, Decimal]]:
    records = await api.fetch(select(CostRecord).where(CostRecord.resource_id.in_(ids)))
    found: dict[date, tuple[int, Decimal]] = {}
    for r in records:
        count, total = found.get(r.date, (0, Decimal(0)))
        found[r.date] = (count + 1, total + r.cost)
    return found


async def test_three_simulated_days_and_a_rerun(api: Api) -> None:
    # Its own time-skipping server: a shared one may already be far ahead (other tests'
    # timers), and this test reads the dates it reaches.
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
        data_converter=data_converter(),
        interceptors=[ContextPropagationInterceptor()],
    )
    await add_search_attributes(env.client)  # the workflow upserts IdpStatus
    ids, team_id = await _inventory(api, datetime.now(UTC) - timedelta(days=10))
    engine = create_engine(api.settings.effective_database_url)
    queue = f"costs-{uuid.uuid4().hex[:8]}"
    acts = CostActivities(session_factory(engine), PriceCatalog.load())
    results: list[CostCollectionResult] = []
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[CostCollectionWorkflow],
            activities=acts.all(),
            workflow_runner=sandbox_runner(),
        ):
            for _ in range(3):  # what the daily schedule does: a run a day, for the day before
                with env.auto_time_skipping_disabled():  # time moves only by the sleep
                    results.append(
                        await env.client.execute_workflow(
                            CostCollectionWorkflow.run,
                            CostCollectionInput(),
                            id=f"costs-{uuid.uuid4()}",
                            task_queue=queue,
                        )
                    )
                await env.sleep(timedelta(days=1))
            days = [r.day for r in results]
            assert [b - a for a, b in itertools.pairwise(days)] == [timedelta(days=1)] * 2
            before = await _totals(api, ids)
            assert before == {d: (3, expected(d)) for d in days}

            rerun = await env.client.execute_workflow(
                CostCollectionWorkflow.run,
                CostCollectionInput(day=days[1]),
                id=f"costs-{uuid.uuid4()}",
                task_queue=queue,
            )
            assert rerun.collected[0].resources >= 3
            assert await _totals(api, ids) == before  # replaced, not added
    finally:
        await engine.dispose()
        await env.shutdown()
    # the team's 2 USD budget: over on the first day already, reported once that month
    alerts = [a for r in results for a in r.alerts if a.team_id == team_id]
    assert len({a.period for a in alerts}) == len(alerts) >= 1
    assert alerts[0].scope.startswith("team web-") and alerts[0].amount == Decimal("2")
    [budget] = await api.fetch(select(Budget).where(Budget.team_id == team_id))
    assert budget.notified_month in {r.day.strftime("%Y-%m") for r in results}


async def test_the_daily_schedule_backfills_the_days_it_covers(
    api: Api, temporal_env: WorkflowEnvironment, topology: Topology
) -> None:
    client = temporal_env.client
    ids, _ = await _inventory(api, datetime.now(UTC) - timedelta(days=10))
    queue, name = f"costs-{uuid.uuid4().hex[:8]}", f"costs-{uuid.uuid4().hex[:8]}"
    daily = topology.schedules["cost-collection"].model_copy(update={"task_queue": queue})
    only = topology.model_copy(update={"schedules": {name: Schedule.model_validate(daily)}})
    engine = create_engine(api.settings.effective_database_url)
    acts = CostActivities(session_factory(engine), PriceCatalog.load())
    try:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[CostCollectionWorkflow],
            activities=acts.all(),
            workflow_runner=sandbox_runner(),
        ):
            assert await sync_schedules(client, only) == [schedule_id(name)]
            now = datetime.now(UTC)
            await backfill(client, name, now - timedelta(days=3), now)

            async def three_done() -> bool:
                runs = [
                    w
                    async for w in client.list_workflows(
                        f"TaskQueue = '{queue}' AND ExecutionStatus = 'Completed'"
                    )
                ]
                return len(runs) == 3

            await wait_until("three backfilled runs", three_done, timeout=60, every=0.5)
            # each run is searchable by its outcome and says which schedule started it
            succeeded = await executions(
                client, f"TaskQueue = '{queue}' AND IdpStatus = 'succeeded'", at_least=3
            )
            assert len(succeeded) == 3
            described = await client.get_workflow_handle(succeeded[0].id).describe()
            assert await described.static_summary() == (
                f"{name} (schedule {schedule_id(name)}): {daily.note}"
            )
            totals = await _totals(api, ids)
            assert len(totals) == 3 and all(count == 3 for count, _ in totals.values())
            last_fire = now.replace(hour=2, minute=0, second=0, microsecond=0)
            if last_fire > now:
                last_fire -= timedelta(days=1)
            latest = (last_fire - timedelta(days=1)).date()  # each run collects the day before
            assert sorted(totals) == [latest - timedelta(days=n) for n in (2, 1, 0)]
    finally:
        await client.get_schedule_handle(schedule_id(name)).delete()
        await engine.dispose()


async def test_a_provider_failing_after_its_retries_fails_the_run_naming_it(
    api: Api, temporal_env: WorkflowEnvironment, topology: Topology
) -> None:
    """The platform could not collect a provider: the other providers' costs are stored and
    budgets checked, then the execution FAILS, typed, naming the provider (the UI's Failures)."""
    # Two quick attempts instead of five over minutes: what is tested is the end of them.
    kind = topology.activity("cost_collection")
    quick = kind.model_copy(
        update={"retry": Retry(initial_interval=timedelta(milliseconds=100), maximum_attempts=2)}
    )
    policies.install(
        topology.model_copy(
            update={"activities": {**topology.activities, "cost_collection": quick}}
        )
    )
    client = temporal_env.client
    day = date.today() - timedelta(days=20)  # a day of this test's own
    with OpenCostStandin() as good, OpenCostStandin() as failing:
        first = await provider(api, "kubernetes", config={"opencost_url": good.url})
        second = await provider(api, "kubernetes", config={"opencost_url": failing.url})
        [ns1] = await resources(api, first, {"type": NAMESPACE, "name": "a", "identifier": "a"})
        [ns2] = await resources(api, second, {"type": NAMESPACE, "name": "b", "identifier": "b"})
        good.day(day, {"a": allocation("a", 1.0, day=day)})
        failing.day(day, {"b": allocation("b", 4.0, day=day)})
        failing.fail_next(100, 503)
        engine = create_engine(api.settings.effective_database_url)
        queue, workflow_id = f"costs-{uuid.uuid4().hex[:8]}", f"costs-{uuid.uuid4()}"
        acts = CostActivities(session_factory(engine), PriceCatalog.load(), settings=api.settings)
        try:
            async with Worker(
                client,
                task_queue=queue,
                workflows=[CostCollectionWorkflow],
                activities=acts.all(),
                workflow_runner=sandbox_runner(),
            ):
                with pytest.raises(WorkflowFailureError) as failed:
                    await client.execute_workflow(
                        CostCollectionWorkflow.run,
                        CostCollectionInput(day=day, sources=["estimate", "opencost"]),
                        id=workflow_id,
                        task_queue=queue,
                    )
        finally:
            await engine.dispose()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "CostCollectionFailed"
    assert cause.non_retryable
    assert f"({second}): 127.0.0.1 answered 503" in cause.message, cause.message
    assert f"({first})" not in cause.message
    assert "sources done: estimate" in cause.message
    kept = await records(api, [ns1, ns2], "opencost")
    assert set(kept) == {ns1} and kept[ns1].date == day  # the good provider's day is stored
    [found] = await executions(client, f"WorkflowId = '{workflow_id}' AND IdpStatus = 'failed'")
    assert found.status == WorkflowExecutionStatus.FAILED
    handle = client.get_workflow_handle(workflow_id)
    assert await activity_summaries(client, handle) == [
        f"collect costs from estimate for {day}",
        f"collect costs from opencost for {day}",
        f"check budgets after {day}",
    ]
