"""The activities of PromotionWorkflow (task queue `promotions`): read the plan, check the
policy gate, mirror state into the promotion's row, deploy through the environment's target,
verify health, and find the Slack messages that asked for approval.

The deploy activity reads the environment's configuration and decrypts its secrets itself, so
no value travels through workflow history. Its refusals carry a type the workflow tells apart:
`ReleaseInvalid` (the version cannot run on this target: the user's to fix) and
`DeployContextRefused` (the environment's cluster context is not allowed: the platform's)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.approvals import Approver, ApproverCheck
from core.db.engine import transaction
from core.db.types import utcnow
from core.deploy.targets import DeployTargets, Place, Release, ReleaseInvalid
from core.environments.approvers import checked_approver
from core.environments.environments import EnvironmentService, reveal
from core.environments.kubernetes import context_problem
from core.models.catalog import Service, ServiceVersion
from core.models.environments import Environment
from core.models.promotions import ServiceDeployment
from core.notifications.history import delivered_slack_messages
from core.promotions.messages import (
    DeployInput,
    DeploymentMark,
    DeployResult,
    Gate,
    Plan,
    PromotionInput,
    SlackMessagesInput,
    StatusUpdate,
    VerifyInput,
    VerifyResult,
)
from core.promotions.promotions import PromotionService

HEARTBEAT_EVERY = 5.0  # seconds, while a deploy waits on its target


def target_label(env: Environment) -> str:
    """The environment's deploy target as an operator names it in a message."""
    if env.target != "kubernetes":
        return env.target
    return (
        f"kubernetes, context {env.cluster_id or 'in-cluster'}, "
        f"namespace {env.namespace or env.name}"
    )


def place_of(env: Environment) -> Place:
    return Place(
        key=f"{env.name}-{env.id.hex[:8]}",
        name=env.name,
        target=env.target,
        namespace=env.namespace,
        cluster_id=env.cluster_id,
        limits=dict(env.limits or {}),
        environment_id=str(env.id),
        organization_id=str(env.org_id),
    )


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PromotionActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        targets: DeployTargets,
        *,
        platform_url: str = "",
    ) -> None:
        self._sessions = sessions
        self._targets = targets
        self._platform_url = platform_url

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare,
            self.check,
            self.record,
            self.deploy,
            self.verify,
            self.mark_deployment,
            self.slack_messages,
            self.check_approver,
        ]

    @activity.defn(name="promotions.check_approver")
    async def check_approver(self, check: ApproverCheck) -> Approver:
        """The approver of a `decide` Update as the database says now (their grants and
        teams): the workflow trusts this, never the Update's own claim."""
        async with transaction(self._sessions) as session:
            return await checked_approver(session, check)

    @activity.defn(name="promotions.prepare")
    async def prepare(self, input: PromotionInput) -> Plan:
        async with transaction(self._sessions) as session:
            promotions = PromotionService(session)
            promotion = await promotions.get(input.promotion_id)
            plan = await promotions.plan(promotion, self._platform_url)
            env = await session.get(Environment, promotion.environment_id)
            assert env is not None
            return plan.model_copy(update={"target": target_label(env)})

    @activity.defn(name="promotions.check")
    async def check(self, input: PromotionInput) -> Gate:
        async with transaction(self._sessions) as session:
            promotions = PromotionService(session)
            return await promotions.gate(await promotions.get(input.promotion_id), utcnow())

    @activity.defn(name="promotions.record")
    async def record(self, update: StatusUpdate) -> None:
        async with transaction(self._sessions) as session:
            await PromotionService(session).record(update)

    @activity.defn(name="promotions.deploy")
    async def deploy(self, input: DeployInput) -> DeployResult:
        """Deploy `input.version_id` into the promotion's environment: a `deploying` record,
        the target's deploy, then `healthy` (and what ran before `superseded`) or `failed`."""
        async with transaction(self._sessions) as session:
            promotion = await PromotionService(session).get(input.promotion_id)
            env = await EnvironmentService(session).get(promotion.environment_id)
            service = await session.get(Service, promotion.service_id)
            version = await session.get(ServiceVersion, input.version_id)
            assert service is not None and version is not None
            current = await PromotionService(session).current(env.id, service.id)
            entries = await EnvironmentService(session).config(env)
            plain = {e.key: e.value for e in entries if not e.is_secret}
            secrets = {e.key: reveal(e) for e in entries if e.is_secret}
            deployment_id = uuid.uuid4()
            previous_id = current.id if current else None
            previous_version_id = current.version_id if current else None
            row = ServiceDeployment(
                id=deployment_id,
                service_id=service.id,
                version_id=version.id,
                environment_id=env.id,
                version=version.version,
                promotion_id=promotion.id,
                status="deploying",
            )
            session.add(row)
            if not input.rollback:
                promotion.status = "deploying"
            place, service_name, release = place_of(env), service.name, dict(version.config)
            version_name = version.version
            refused = await context_problem(session, env)
        if refused is not None:
            await self._settle(deployment_id, None, "failed", {}, refused)
            raise ApplicationError(refused, type="DeployContextRefused", non_retryable=True)
        try:
            async with _heartbeating():
                applied = await self._targets.deploy(
                    place, Release(service_name, version_name, release, plain, secrets)
                )
        except ReleaseInvalid as exc:
            await self._settle(deployment_id, None, "failed", {}, str(exc))
            raise ApplicationError(str(exc), type="ReleaseInvalid", non_retryable=True) from None
        except Exception as exc:  # the target failed: this attempt's record ends, Temporal retries
            await self._settle(deployment_id, None, "failed", {}, str(exc) or type(exc).__name__)
            raise
        status = "healthy" if applied.ok else "failed"
        await self._settle(deployment_id, previous_id, status, applied.details, applied.error)
        return DeployResult(
            ok=applied.ok,
            deployment_id=deployment_id,
            previous_deployment_id=previous_id,
            previous_version_id=previous_version_id,
            switched=applied.switched,
            error=applied.error,
        )

    async def _settle(
        self,
        deployment_id: uuid.UUID,
        previous_id: uuid.UUID | None,
        status: str,
        details: dict[str, Any],
        error: str | None,
    ) -> None:
        async with transaction(self._sessions) as session:
            row = await session.get(ServiceDeployment, deployment_id)
            assert row is not None
            row.status, row.details, row.error = status, details, error
            now = utcnow()
            if status == "healthy":
                row.deployed_at = now
                if previous_id is not None:
                    previous = await session.get(ServiceDeployment, previous_id)
                    if previous is not None and previous.status == "healthy":
                        previous.status, previous.finished_at = "superseded", now
            else:
                row.finished_at = now

    @activity.defn(name="promotions.verify")
    async def verify(self, input: VerifyInput) -> VerifyResult:
        """Probe what the deployment runs every `interval` for `seconds`: two failed probes in
        a row fail it (and mark the deployment failed)."""
        async with transaction(self._sessions) as session:
            row = await session.get(ServiceDeployment, input.deployment_id)
            assert row is not None
            env = await session.get(Environment, row.environment_id)
            service = await session.get(Service, row.service_id)
            assert env is not None and service is not None
            place, name, details = place_of(env), service.name, dict(row.details)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + input.seconds
        probes, failures, problem = 0, 0, None
        while True:
            problem = await self._targets.problem(place, name, details)
            probes += 1
            failures = failures + 1 if problem else 0
            activity.heartbeat(probes)
            if failures >= 2 or loop.time() >= deadline:
                break
            await asyncio.sleep(input.interval if not problem else min(input.interval, 0.5))
        if failures and problem:
            async with transaction(self._sessions) as session:
                row = await session.get(ServiceDeployment, input.deployment_id)
                assert row is not None
                row.error = problem
            return VerifyResult(ok=False, probes=probes, error=problem)
        return VerifyResult(ok=True, probes=probes)

    @activity.defn(name="promotions.mark_deployment")
    async def mark_deployment(self, mark: DeploymentMark) -> None:
        """Set a deployment's end state (`rolled_back` once replaced, or `failed`)."""
        async with transaction(self._sessions) as session:
            row = await session.get(ServiceDeployment, mark.deployment_id)
            if row is not None:
                row.status, row.finished_at = mark.status, row.finished_at or utcnow()

    @activity.defn(name="promotions.slack_messages")
    async def slack_messages(self, input: SlackMessagesInput) -> list[uuid.UUID]:
        """The delivered Slack messages that asked for this promotion's approval."""
        async with transaction(self._sessions) as session:
            return await delivered_slack_messages(
                session, f"promotion:{input.promotion_id}", "promotion.awaiting_approval"
            )
