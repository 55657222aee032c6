"""The API under ordinary concurrency, on each backend (SQLite and PostgreSQL), over real HTTP:
20 pipeline runs writing their logs, 5 live log (SSE) followers and 200 mixed API calls (reads,
cancels, approvals and rejections of promotions awaiting approval) at once. Nothing answers 5xx,
nothing says "database is locked" or holds a transaction across a Temporal call, every run ends
as it should (succeeded, or cancelled when it was cancelled) and every log line of every run is
recorded exactly once.

Everything is real: a Temporal dev server with in-process workers, the database of the
session's backend, a git repository on disk, the app under uvicorn on a loopback port (the
in-process transport buffers whole responses, so it cannot follow a stream); Slack's Web API is
the stand-in. The rate limiter is off: one user's 200 calls at once would rightly be 429s, and
the limiter is tested on its own (test_ratelimit_api)."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from core.models.pipelines import PipelineRun
from core.settings import Settings
from core.temporal import policies
from core.topology import Topology
from tests.helpers import wait_until
from tests.integration.pipeline_helpers import (
    Stack,
    make_repo,
    pipeline_stack,
    pipelines_worker,
    retire_runs,
    served,
    sse_events,
)
from tests.integration.pipeline_helpers import stack_settings as pipeline_settings
from tests.integration.promotion_helpers import (
    APP,
    BOT_TOKEN,
    SLACK_CHANNEL,
    Person,
    PromotionStack,
    World,
    promotion_workers,
)
from tests.integration.promotion_helpers import stack_settings as promotion_settings
from tests.standins.slack_api import SlackApiStandin
from workflows.notification import NOTIFICATIONS_QUEUE
from workflows.promotion import PROMOTIONS_QUEUE

RUNS = 20  # pipeline runs writing logs
LINES = 50  # log lines each run writes, a little apart so the runs overlap
FOLLOWERS = 5  # live log streams, each following one run to its end
HOLDS = 3  # more runs, waiting on a file that is never written: they are cancelled
CALLS = 200  # mixed API calls issued at once
REJECTION = "not during the storm"


def emit_definition() -> dict[str, Any]:
    """One step printing LINES numbered lines that name the run (so a line recorded under
    another run, twice or not at all is seen)."""
    script = f'for i in $(seq 1 {LINES}); do echo "line-$i $IDP_RUN_ID"; sleep 0.05; done'
    return {"stages": [{"name": "emit", "steps": [{"name": "say", "run": script}]}]}


def hold_definition(gate: Path) -> dict[str, Any]:
    """One step that waits for `gate` (written only after the runs should be cancelled)."""
    script = f"echo holding; while [ ! -f {gate} ]; do sleep 0.1; done"
    return {"stages": [{"name": "hold", "steps": [{"name": "wait", "run": script}]}]}


def expected_lines(run_id: str) -> list[str]:
    return [f"line-{i} {run_id}" for i in range(1, LINES + 1)]


@pytest.fixture(autouse=True)
def _topology(topology: Topology) -> Iterator[None]:
    policies.install(topology)
    yield


@dataclass
class Platform:
    """One API (with its pipeline and promotion helpers) on the session's database."""

    pipelines: Stack
    promotions: PromotionStack
    repo_url: str  # a repository on disk, cloned through the URL rewrite


@pytest.fixture
async def platform(
    settings: Settings,
    topology: Topology,
    database_url: str,
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
) -> AsyncIterator[Platform]:
    repo = tmp_path / "repo"
    make_repo(repo, {"README.md": "concurrency\n"})
    repo_url = f"https://github.com/acme-{uuid.uuid4().hex[:8]}/app"
    with SlackApiStandin(tokens={BOT_TOKEN}, channels={SLACK_CHANNEL: "deploys"}) as slack:
        configured = promotion_settings(
            pipeline_settings(
                settings,
                temporal_env,
                {repo_url: f"file://{repo}"},
                github_token=None,
                rate_limit_enabled=False,
            ),
            temporal_env.client,
            slack,
        )
        async with pipeline_stack(configured, topology, database_url) as stack:
            app_path = tmp_path / "app.py"
            app_path.write_text(APP)
            promotions = PromotionStack(
                stack.api, stack.client, stack.admin, stack.settings, slack, app_path
            )
            for queue in (PROMOTIONS_QUEUE, NOTIFICATIONS_QUEUE):
                await retire_runs(stack.client, queue)
            try:
                yield Platform(stack, promotions, repo_url)
            finally:
                for queue in (PROMOTIONS_QUEUE, NOTIFICATIONS_QUEUE):
                    await retire_runs(stack.client, queue)


@dataclass
class Call:
    """One API call of the storm and what it answered."""

    kind: str  # what it is, e.g. "cancel hold run", "approve A as alice"
    method: str
    path: str
    allowed: frozenset[int]
    status: int = 0
    body: str = ""
    json: Any = None


async def issue(http: httpx.AsyncClient, call: Call, headers: dict[str, str], body: Any) -> Call:
    response = await http.request(call.method, call.path, headers=headers, json=body)
    call.status, call.body = response.status_code, response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        call.json = response.json()
    return call


@dataclass
class Followed:
    run_id: str
    texts: list[str]
    events: list[str]
    end: dict[str, Any] | None


async def follow(http: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> Followed:
    """Read the run's live log stream (SSE) to its `end` event."""
    texts: list[str] = []
    events: list[str] = []
    end: dict[str, Any] | None = None
    async with http.stream(
        "GET", f"/pipelines/runs/{run_id}/logs?follow=true", headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event, data in sse_events(response):
            events.append(event)
            if event == "log":
                texts.extend(entry["text"] for entry in data)
            elif event == "end":
                end = data
                break
    return Followed(run_id, texts, events, end)


async def workflow_closed(stack: Stack, run: dict[str, Any]) -> str:
    """How the run's workflow closed (COMPLETED, CANCELED, ...), once it has: by then its
    record is final (the workflow's last activities write it)."""
    handle = stack.client.get_workflow_handle(run["workflow_id"])
    status: list[WorkflowExecutionStatus | None] = [None]

    async def closed() -> bool:
        status[0] = (await handle.describe()).status
        return status[0] != WorkflowExecutionStatus.RUNNING

    await wait_until(f"the workflow of run {run['id']} closed", closed, timeout=300, every=0.2)
    assert status[0] is not None
    return status[0].name


async def awaiting_promotion(
    promotions: PromotionStack, world: World, version: str
) -> dict[str, Any]:
    await promotions.version(world, version)
    started = await promotions.deploy(world, "prod", version)
    return await promotions.until(started["id"], "awaiting_approval", timeout=60)


async def test_runs_followers_and_mixed_calls_at_once_answer_no_5xx_and_lose_nothing(
    platform: Platform, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    stack, promotions = platform.pipelines, platform.promotions
    admin = stack.admin
    gate = tmp_path / "gate"  # never written before the hold runs are cancelled

    # -- set up: a service with two pipelines, two production environments with a promotion
    # each awaiting two approvals, approvers and people who may not approve
    service = await stack.service(platform.repo_url)
    emit = await stack.pipeline(service["id"], definition=emit_definition())
    hold = await stack.pipeline(service["id"], definition=hold_definition(gate))
    approving = await promotions.world(chain=("prod",))  # A: approved during the storm
    rejecting = await promotions.world(chain=("prod",))  # B: rejected during the storm
    both = (approving.approvers_team, rejecting.approvers_team)
    alice = await promotions.person("approver", teams=both)
    bob = await promotions.person("approver", teams=(approving.approvers_team,))
    carol = await promotions.person("approver", teams=(rejecting.approvers_team,))
    outsider = await promotions.person("approver")  # an approver, on neither team
    viewer = await promotions.person("viewer")
    requester = Person("admin", "admin", admin)  # requested both promotions

    async with (
        pipelines_worker(stack.client, stack.settings),
        promotion_workers(promotions, health_timeout=30.0),
        served(stack.api) as base_url,
        httpx.AsyncClient(
            base_url=base_url, timeout=120, limits=httpx.Limits(max_connections=None)
        ) as http,
    ):
        uvicorn_log = logging.getLogger("uvicorn")  # it does not propagate to caplog's root
        uvicorn_log.addHandler(caplog.handler)
        try:
            promotion_a = await awaiting_promotion(promotions, approving, "1.0.0")
            promotion_b = await awaiting_promotion(promotions, rejecting, "1.0.0")
            # a run that finished before the storm: cancelling it is a 409
            finished = await stack.finished(await stack.start(emit["id"]), timeout=120)
            assert finished["status"] == "succeeded", finished

            # -- the runs, started at once through the API
            starts = await asyncio.gather(
                *(
                    issue(
                        http,
                        Call(kind, "POST", f"/pipelines/{pipeline}/run", frozenset({202})),
                        admin,
                        {},
                    )
                    for kind, pipeline in [("start emit", emit["id"])] * RUNS
                    + [("start hold", hold["id"])] * HOLDS
                )
            )
            assert [c.status for c in starts] == [202] * (RUNS + HOLDS), [c.body for c in starts]
            runs = [c.json["id"] for c in starts[:RUNS]]
            holds = [c.json["id"] for c in starts[RUNS:]]

            # -- the storm: followers and mixed calls, all at once
            calls = storm(
                runs=runs,
                holds=holds,
                finished=finished["id"],
                emit=emit["id"],
                hold=hold["id"],
                a=promotion_a,
                b=promotion_b,
                people={
                    "admin": requester,
                    "alice": alice,
                    "bob": bob,
                    "carol": carol,
                    "outsider": outsider,
                    "viewer": viewer,
                },
            )
            assert len(calls) == CALLS
            async with asyncio.timeout(600):  # a hang fails the test instead of blocking it
                results = await asyncio.gather(
                    *(follow(http, run_id, admin) for run_id in runs[:FOLLOWERS]),
                    *(issue(http, call, headers, body) for call, headers, body in calls),
                )
            followed: list[Followed] = results[:FOLLOWERS]  # type: ignore[assignment]
            answered: list[Call] = results[FOLLOWERS:]  # type: ignore[assignment]

            # -- whatever the outcome, let the hold runs end (then see they were cancelled)
            gate.write_text("open")
            # no 5xx (said at once, rather than as something that never finished)
            broken = [c for c in answered if c.status >= 500]
            assert not broken, "\n".join(
                f"{c.status} {c.method} {c.path}: {c.body}" for c in broken
            )
            assert not [c for c in answered if "database is locked" in c.body]

            # -- wait for every run's workflow and both promotions to end
            closed = {c.json["id"]: await workflow_closed(stack, c.json) for c in starts}
            final_a = await promotions.finished(promotion_a["id"], timeout=120)
            final_b = await promotions.finished(promotion_b["id"], timeout=120)
            logs = {r: await stack.logs(r) for r in runs}
        finally:
            uvicorn_log.removeHandler(caplog.handler)

    # -- no lock errors, no transaction held across a Temporal call
    assert "database is locked" not in caplog.text, caplog.text
    assert "while holding an open" not in caplog.text, caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, caplog.text
    unexpected = [c for c in answered if c.status not in c.allowed]
    assert not unexpected, "\n".join(
        f"{c.kind}: {c.status} {c.method} {c.path}: {c.body}" for c in unexpected
    )

    # -- every run recorded and ended as it should: its workflow closed, its record final
    rows = await stack.api.fetch(
        select(PipelineRun).where(PipelineRun.id.in_([uuid.UUID(r) for r in [*runs, *holds]]))
    )
    recorded_status = {str(row.id): row.status for row in rows}
    ended = {r: (closed[r], recorded_status.get(r)) for r in [*runs, *holds]}
    assert {r: ended[r] for r in runs} == dict.fromkeys(runs, ("COMPLETED", "succeeded"))
    assert {r: ended[r] for r in holds} == dict.fromkeys(holds, ("CANCELED", "cancelled"))
    # each was cancelled by one of the storm's calls (of the run, or of its whole pipeline)
    cancelled = [
        run_id
        for c in answered
        if c.kind.startswith("cancel hold") and c.status == 200
        for run_id in c.json["cancelled"]
    ]
    assert set(cancelled) == set(holds), cancelled
    [recorded] = await stack.api.fetch(
        select(func.count())
        .select_from(PipelineRun)
        .where(PipelineRun.pipeline_id.in_([uuid.UUID(emit["id"]), uuid.UUID(hold["id"])]))
    )
    assert recorded == 1 + RUNS + HOLDS
    listed = await stack.api.client.get(
        "/pipelines/runs", params={"pipeline_id": emit["id"], "limit": 200}, headers=admin
    )
    assert {r["id"] for r in listed.json()["items"]} == {finished["id"], *runs}

    # -- every line of every run recorded exactly once, in order, under its own run
    for run_id in runs:
        assert logs[run_id].splitlines() == [f"emit/say | {t}" for t in expected_lines(run_id)]
    # ... and each follower read its run's lines to the end, each once
    for seen in followed:
        assert seen.texts == expected_lines(seen.run_id), seen.run_id
        assert seen.end == {"status": "succeeded"}, seen
        assert seen.events[-1] == "end"

    # -- the approvals: each approver's decision counted once, the refused ones changed nothing
    def ok(kind: str) -> int:
        return sum(1 for c in answered if c.kind == kind and c.status == 200)

    assert ok("approve A as alice") == 1 and ok("approve A as bob") == 1
    assert ok("reject B as carol") == 1
    assert final_a["status"] == "succeeded", final_a
    assert sorted((d["decision"], d["user_id"], d["via"]) for d in final_a["decisions"]) == sorted(
        [("approve", alice.id, "api"), ("approve", bob.id, "api")]
    )
    assert final_b["status"] == "rejected" and REJECTION in final_b["reason"], final_b
    carols = [d for d in final_b["decisions"] if d["decision"] == "reject"]
    assert [d["user_id"] for d in carols] == [carol.id]
    assert {d["user_id"] for d in final_b["decisions"]} <= {alice.id, carol.id}


def storm(
    *,
    runs: list[str],
    holds: list[str],
    finished: str,
    emit: str,
    hold: str,
    a: dict[str, Any],
    b: dict[str, Any],
    people: dict[str, Person],
) -> list[tuple[Call, dict[str, str], Any]]:
    """The CALLS mixed calls (reads, cancels, approvals), each with the statuses it may
    answer, in a fixed shuffled order."""
    admin = people["admin"].headers
    only_200 = frozenset({200})
    calls: list[tuple[Call, dict[str, str], Any]] = []

    reads = [
        lambda k: f"/pipelines/runs?pipeline_id={emit}",
        lambda k: f"/pipelines/runs/{runs[k % RUNS]}",
        lambda k: f"/pipelines/runs/{runs[k % RUNS]}/logs",
        lambda k: "/services",
        lambda k: f"/promotions?environment_id={a['environment_id']}",
        lambda k: f"/promotions/{a['id']}",
        lambda k: f"/pipelines/{emit}",
        lambda k: f"/pipelines/runs/{holds[k % HOLDS]}",
        lambda k: "/pipelines/runs?status=running",
        lambda k: f"/promotions/{b['id']}",
    ]
    for k in range(120):
        path = reads[k % len(reads)](k)
        calls.append((Call("read", "GET", path, only_200), admin, None))

    # cancels: the hold runs, several times each (once done, again is 409 or nothing to do),
    # and all of their pipeline's at once; a finished run, always 409
    for k in range(8 * HOLDS):
        path = f"/pipelines/runs/{holds[k % HOLDS]}/cancel"
        calls.append((Call("cancel hold run", "POST", path, frozenset({200, 409})), admin, None))
    for _ in range(4):
        path = f"/pipelines/{hold}/cancel"
        calls.append((Call("cancel hold pipeline", "POST", path, only_200), admin, None))
    for _ in range(12):
        path = f"/pipelines/runs/{finished}/cancel"
        calls.append((Call("cancel finished", "POST", path, frozenset({409})), admin, None))

    # approvals: A needs two (alice and bob, each counted once); B is rejected by carol while
    # alice may approve it; the requester, an approver on neither team and a viewer may not
    decide = [
        ("approve", a, "alice", 6, {200, 409}),
        ("approve", a, "bob", 6, {200, 409}),
        ("approve", a, "admin", 4, {403, 409}),
        ("approve", a, "outsider", 4, {403, 409}),
        ("approve", a, "viewer", 4, {403}),
        ("reject", b, "carol", 6, {200, 409}),
        ("approve", b, "alice", 4, {200, 409}),
        ("reject", b, "outsider", 4, {403, 409}),
        ("reject", b, "viewer", 2, {403}),
    ]
    for action, promotion, who, times, allowed in decide:
        label = "A" if promotion is a else "B"
        body = {"comment": REJECTION} if action == "reject" else {}
        for _ in range(times):
            call = Call(
                f"{action} {label} as {who}",
                "POST",
                f"/promotions/{promotion['id']}/{action}",
                frozenset(allowed),
            )
            calls.append((call, people[who].headers, body))
    random.Random(20).shuffle(calls)
    return calls
