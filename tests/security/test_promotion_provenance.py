"""The promotion's branch is the version's provenance, not the requester's word (issue 15,
finding 5; review H4): with `allowed_branches: [main]`, a request saying `"branch": "main"`
for a version built from a feature branch is refused, a version registered by hand has no
branch and is refused by that policy, and approvers are shown where the branch came from."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from core.models.pipelines import PipelineRun
from core.models.promotions import Promotion, ServiceDeployment
from tests.helpers import wait_until
from tests.integration.identity_helpers import assert_error
from tests.integration.promotion_helpers import (
    PromotionStack,
    World,
    promotion_workers,
)

MAIN_ONLY = {"allowed_branches": ["main"]}


@pytest.fixture
def stack(promotions: PromotionStack) -> PromotionStack:
    return promotions


async def _nothing_deployed(stack: PromotionStack, world: World, env: str) -> None:
    rows = await stack.api.fetch(
        select(ServiceDeployment).where(
            ServiceDeployment.environment_id == uuid.UUID(world.envs[env]["id"])
        )
    )
    assert rows == []


async def test_a_feature_branch_build_requested_as_main_is_refused(stack: PromotionStack) -> None:
    world = await stack.world(dev_policy=MAIN_ONLY, chain=("dev",))
    run_id = await stack.build(world, "feature/sneaky")
    version = await stack.version(world, "1.0.0", built_by=run_id)  # its config says main
    assert version["pipeline_run_id"] == run_id
    dev = world.envs["dev"]["id"]

    # the attack from the review: the body says main
    said_main = await stack.post(
        f"/environments/{dev}/deploy",
        {"service_id": world.service_id, "version": "1.0.0", "branch": "main"},
    )
    error = assert_error(said_main, 422, "validation_error")
    assert "branch is not accepted" in error["message"] and "provenance" in error["message"]
    mine = select(Promotion).where(Promotion.service_id == uuid.UUID(world.service_id))
    assert await stack.api.fetch(mine) == []  # nothing was requested

    # without it, the branch is the run's, and the policy refuses it
    async with promotion_workers(stack):
        started = await stack.deploy(world, "dev", "1.0.0")
        assert started["branch"] == "feature/sneaky" and started["pipeline_run_id"] == run_id
        refused = await stack.finished(started["id"])
    assert refused["status"] == "refused", refused
    assert refused["reason"].startswith(
        f"branch feature/sneaky (from pipeline run {run_id}: ci-"
    ), refused["reason"]
    assert refused["reason"].endswith(f"may not go to {world.envs['dev']['name']} (allowed: main)")
    await _nothing_deployed(stack, world, "dev")


async def test_versions_without_provenance_have_no_branch_and_are_refused(
    stack: PromotionStack,
) -> None:
    world = await stack.world(dev_policy=MAIN_ONLY, chain=("dev",))
    await stack.version(world, "2.0.0")  # by hand: config.branch "main" is only a claim
    # a manual run whose caller named the commit says main, but the host never did
    named = await stack.build(world, "main", pushed=False)
    await stack.version(world, "2.1.0", built_by=named)
    async with promotion_workers(stack):
        by_hand = await stack.finished((await stack.deploy(world, "dev", "2.0.0"))["id"])
        manual = await stack.finished((await stack.deploy(world, "dev", "2.1.0"))["id"])
    assert by_hand["status"] == "refused" and by_hand["branch"] is None, by_hand
    assert by_hand["provenance"].startswith("no provenance (registered by hand")
    assert by_hand["reason"].startswith("2.0.0 has no provenance (registered by hand")
    assert "register the version with the pipeline_run_id" in by_hand["reason"]
    assert manual["status"] == "refused" and manual["branch"] is None, manual
    assert manual["pipeline_run_id"] == named
    assert "a commit a person named" in manual["provenance"]
    await _nothing_deployed(stack, world, "dev")


async def test_a_version_links_only_a_succeeded_run_of_its_own_service(
    stack: PromotionStack,
) -> None:
    world = await stack.world(chain=("dev",))
    other = await stack.world(chain=("dev",))
    theirs = await stack.build(other, "main")
    url = f"/services/{world.service_id}/versions"
    foreign = await stack.post(url, {"version": "3.0.0", "pipeline_run_id": theirs})
    assert "is not a run of" in assert_error(foreign, 422)["message"]
    unknown = await stack.post(url, {"version": "3.0.0", "pipeline_run_id": str(uuid.uuid4())})
    assert "is not a run of" in assert_error(unknown, 422)["message"]
    ours = await stack.build(world, "main")
    wrong_sha = await stack.post(
        url, {"version": "3.0.0", "pipeline_run_id": ours, "git_sha": "a" * 40}
    )
    assert "leave git_sha out" in assert_error(wrong_sha, 422)["message"]
    async with stack.api.session() as session:
        run = await session.get(PipelineRun, uuid.UUID(ours))
        assert run is not None
        run.status = "failed"
    failed = await stack.post(url, {"version": "3.0.0", "pipeline_run_id": ours})
    assert "only a succeeded run" in assert_error(failed, 422)["message"]
    listed = await stack.api.client.get(url, headers=stack.admin)
    assert listed.json()["items"] == []  # nothing was registered


async def test_approvers_see_where_the_branch_came_from(stack: PromotionStack) -> None:
    world = await stack.world(prod_policy=MAIN_ONLY, chain=("prod",))
    run_id = await stack.build(world, "main")
    await stack.version(world, "4.0.0", built_by=run_id)
    async with promotion_workers(stack):
        started = await stack.deploy(world, "prod", "4.0.0")
        waiting = await stack.until(started["id"], "awaiting_approval")
        assert waiting["provenance"].startswith(f"main (from pipeline run {run_id}: ci-")

        async def shown() -> bool:
            return any(
                "Built from" in str(r.blocks) and f"from pipeline run {run_id}" in str(r.blocks)
                for r in stack.slack.calls("chat.postMessage")
                if started["id"] in str(r.blocks)
            )

        await wait_until("the approval request shows the provenance", shown, timeout=15)
        cancelled = await stack.post(f"/promotions/{started['id']}/cancel", {})
        assert cancelled.status_code == 200, cancelled.text
        await stack.finished(started["id"])
