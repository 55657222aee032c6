"""The activities of ProvisionWorkflow, DestroyWorkflow and PreviewExpiryWorkflow (task queue
`provisioning`): read the plan, mirror the state, and run the Pulumi engine (preview, up,
destroy) with its output streamed into the run's log as it comes.

Credentials and the stacks' passphrase are read here and handed to the engine only; what
travels back through Temporal is counts, names and the compliance verdict. Where the Pulumi
CLI is missing, the engine fails before it writes anything, and the activity raises a
non-retryable `PulumiCliMissing` ApplicationError that says how to install it and on which
host. Every engine failure is an ApplicationError of a stable type (`provision_messages`), so
the worker logs an expected failure in one line."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.approvals import Approver, ApproverCheck
from core.db.engine import transaction
from core.db.types import utcnow
from core.environments.approvers import checked_approver
from core.infrastructure.costs import PriceCatalog
from core.infrastructure.engine import Engine, Program, PulumiMissing, StackRef
from core.infrastructure.kubeconfig import kubeconfig_problem
from core.infrastructure.preview import assess
from core.infrastructure.providers import credentials_of
from core.infrastructure.provision_messages import (
    CREDENTIALS_REFUSED,
    ENGINE_FAILED,
    PULUMI_MISSING,
    DestroyResult,
    ExpiryInput,
    PreviewResult,
    ProvisionInput,
    ProvisionPlan,
    ProvisionStatus,
    UpResult,
)
from core.infrastructure.provisioning import ProvisioningService
from core.models.environments import Environment
from core.models.infrastructure import Provider, Resource
from core.models.provisioning import Provision, ProvisionLogChunk
from core.notifications.history import delivered_slack_messages
from infra.stacks import StackSpec, program_for, stack_config

FLUSH_EVERY = 0.5  # seconds between log writes (and heartbeats) while the engine runs

# Pulumi configuration keys for each cloud's credential names (all set as secrets).
CREDENTIAL_CONFIG: dict[str, dict[str, str]] = {
    "aws": {
        "access_key_id": "aws:accessKey",
        "secret_access_key": "aws:secretKey",
        "session_token": "aws:token",
    },
    "gcp": {"credentials_json": "gcp:credentials"},
    "azure": {
        "client_id": "azure-native:clientId",
        "client_secret": "azure-native:clientSecret",
        "tenant_id": "azure-native:tenantId",
        "subscription_id": "azure-native:subscriptionId",
    },
    "kubernetes": {"kubeconfig": "kubernetes:kubeconfig"},
}
# Provider settings shown in its config that Pulumi takes as plain configuration.
PLAIN_CONFIG: dict[str, dict[str, str]] = {"gcp": {"project": "gcp:project"}}


class _RunLog:
    """Collects the engine's lines (from its thread) and writes them as chunks every
    FLUSH_EVERY seconds, heartbeating each time, so the log is readable while it runs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], provision_id: uuid.UUID) -> None:
        self._sessions = sessions
        self._id = provision_id
        self._loop = asyncio.get_running_loop()
        self._pending: list[str] = []
        self._seq = 0

    async def start(self) -> None:
        """Continue after the lines written before (by the preview, or a lost attempt)."""
        async with transaction(self._sessions) as session:
            last = await session.scalar(
                select(func.max(ProvisionLogChunk.last_seq)).where(
                    ProvisionLogChunk.provision_id == self._id
                )
            )
        self._seq = int(last or 0)

    def write(self, text: str) -> None:
        """The engine's output callback (any thread)."""
        self._loop.call_soon_threadsafe(self._pending.append, text.rstrip("\n"))

    async def flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        first = self._seq + 1
        now = utcnow().isoformat()
        entries = [{"seq": first + i, "at": now, "text": line} for i, line in enumerate(lines)]
        self._seq += len(entries)
        try:
            async with transaction(self._sessions) as session:
                session.add(
                    ProvisionLogChunk(
                        provision_id=self._id,
                        first_seq=first,
                        last_seq=self._seq,
                        lines=entries,
                    )
                )
        except IntegrityError:
            pass  # written before

    async def around(self, work: Any) -> Any:
        """Run `work` (a coroutine), flushing and heartbeating until it ends."""
        await self.start()
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=FLUSH_EVERY)
                activity.heartbeat()
                await self.flush()
            return task.result()
        finally:
            if not task.done():
                task.cancel()
            await asyncio.sleep(0)  # let lines scheduled from the engine's thread arrive
            await self.flush()


class ProvisioningActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        engine: Engine,
        catalog: PriceCatalog,
        *,
        backend_url: str,
        passphrase: str,
        platform_url: str = "",
    ) -> None:
        self._sessions = sessions
        self._engine = engine
        self._catalog = catalog
        self._backend_url = backend_url
        self._passphrase = passphrase
        self._platform_url = platform_url

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare,
            self.record,
            self.preview,
            self.up,
            self.destroy,
            self.expiry_destroy,
            self.slack_messages,
            self.check_approver,
        ]

    @activity.defn(name="provisioning.check_approver")
    async def check_approver(self, check: ApproverCheck) -> Approver:
        """The approver of a `decide` Update as the database says now; see
        `core.environments.approvers`."""
        async with transaction(self._sessions) as session:
            return await checked_approver(session, check)

    @activity.defn(name="provisioning.prepare")
    async def prepare(self, input: ProvisionInput) -> ProvisionPlan:
        async with transaction(self._sessions) as session:
            return await ProvisioningService(session).plan(input.provision_id, self._platform_url)

    @activity.defn(name="provisioning.record")
    async def record(self, update: ProvisionStatus) -> None:
        async with transaction(self._sessions) as session:
            await ProvisioningService(session).record(update)

    # -- the engine ---------------------------------------------------------------------------
    async def _stack(
        self, provision_id: uuid.UUID
    ) -> tuple[Provision, StackRef, Program, StackSpec]:
        async with transaction(self._sessions) as session:
            row = await ProvisioningService(session).get(provision_id)
            provider = await session.get(Provider, row.provider_id)
            assert provider is not None
            credentials = credentials_of(provider)
            settings = dict(provider.config or {})
            refused = _refused_credentials(provider.name, credentials)
        if refused is not None:
            raise ApplicationError(refused, type=CREDENTIALS_REFUSED, non_retryable=True)
        spec = StackSpec.model_validate({k: v for k, v in row.spec.items() if k != "ttl_seconds"})
        names = CREDENTIAL_CONFIG[spec.cloud]
        plain = PLAIN_CONFIG.get(spec.cloud, {})
        project, stack = row.stack.split("/", 1)
        ref = StackRef(
            project=project,
            stack=stack,
            backend_url=self._backend_url,
            passphrase=self._passphrase,
            config={
                **stack_config(spec),
                **{key: str(settings[k]) for k, key in plain.items() if k in settings},
            },
            secret_config={names[k]: v for k, v in credentials.items() if k in names and v},
        )
        return row, ref, program_for(spec), spec

    async def _run(self, provision_id: uuid.UUID, work: Callable[[_RunLog], Any]) -> Any:
        log = _RunLog(self._sessions, provision_id)
        try:
            return await log.around(work(log))
        except PulumiMissing as exc:
            raise ApplicationError(str(exc), type=PULUMI_MISSING, non_retryable=True) from None
        except Exception as exc:
            # The engine ran and reported a failure (a cloud error, a bad program): running it
            # again gives the same answer, so it is the result. Retries are for a lost worker.
            raise ApplicationError(
                f"{type(exc).__name__}: {exc}", type=ENGINE_FAILED, non_retryable=True
            ) from None

    @activity.defn(name="provisioning.preview")
    async def preview(self, input: ProvisionInput) -> PreviewResult:
        row, ref, program, spec = await self._stack(input.provision_id)
        planned = await self._run(row.id, lambda log: self._engine.preview(ref, program, log.write))
        async with transaction(self._sessions) as session:
            provider = await session.get(Provider, row.provider_id)
            assert provider is not None
            found = assess(planned, self._catalog, spec.region, tuple(provider.regions))
            service = ProvisioningService(session)
            stored = await service.get(row.id)
            stored.plan = {
                "changes": found.changes,
                "resources": [{"type": r.type, "name": r.name, "op": r.op} for r in planned],
            }
            stored.estimate_monthly = found.estimate_monthly
            stored.currency = self._catalog.currency
            stored.violations = [
                {
                    "rule": v.rule,
                    "severity": v.severity,
                    "message": v.message,
                    "resource": v.subject.name,
                    "type": v.subject.type,
                }
                for v in found.violations
            ]
            over = await service.over_budget(stored, found.estimate_monthly)
        return PreviewResult(
            changes=found.changes,
            estimate_monthly=found.estimate_monthly,
            currency=self._catalog.currency,
            blocking=[
                f"{v.subject.name}: {v.rule}: {v.message}"
                for v in found.violations
                if v.severity == "blocking"
            ],
            warnings=sum(1 for v in found.violations if v.severity == "warning"),
            over_budget=over,
        )

    @activity.defn(name="provisioning.up")
    async def up(self, input: ProvisionInput) -> UpResult:
        """`up`, then record what the stack holds. A retry runs `up` again, which changes
        nothing that already exists, and records again."""
        row, ref, program, _ = await self._stack(input.provision_id)
        deployed = await self._run(row.id, lambda log: self._engine.up(ref, program, log.write))
        async with transaction(self._sessions) as session:
            service = ProvisioningService(session)
            stored = await service.get(row.id)
            count = await service.record_up(stored, deployed, self._catalog)
        return UpResult(resources=count, outputs=sorted(deployed.outputs))

    @activity.defn(name="provisioning.destroy")
    async def destroy(self, input: ProvisionInput) -> DestroyResult:
        """Destroy the run's stack (or its targeted resource and what depends on it), and
        mark what it held destroyed."""
        row, ref, program, _ = await self._stack(input.provision_id)
        async with transaction(self._sessions) as session:
            service = ProvisioningService(session)
            doomed = await service.stack_resources(await service.get(row.id))
            await service.mark(doomed, "destroying")
            ids = [r.id for r in doomed]
            targets = [r.identifier for r in doomed] if row.resource_id else None
            names = sorted(r.name for r in doomed)
        try:
            deleted = await self._run(
                row.id, lambda log: self._engine.destroy(ref, program, log.write, targets)
            )
        except BaseException:
            async with transaction(self._sessions) as session:
                service = ProvisioningService(session)
                await service.mark(await _rows(session, ids), "active")
            raise
        async with transaction(self._sessions) as session:
            await ProvisioningService(session).mark(await _rows(session, ids), "destroyed")
        return DestroyResult(resources=sorted(set(deleted) | set(names)))

    @activity.defn(name="provisioning.slack_messages")
    async def slack_messages(self, input: ProvisionInput) -> list[uuid.UUID]:
        """The delivered Slack messages that asked for this run's approval."""
        async with transaction(self._sessions) as session:
            return await delivered_slack_messages(
                session, f"provision:{input.provision_id}", "environment.awaiting_approval"
            )

    @activity.defn(name="provisioning.expiry_destroy")
    async def expiry_destroy(self, input: ExpiryInput) -> uuid.UUID:
        """The destroy run a preview environment's expiry starts (one per expiry: a retry
        finds the one it created)."""
        reason = f"the preview environment's time to live ended at {input.destroy_at.isoformat()}"
        async with transaction(self._sessions) as session:
            service = ProvisioningService(session)
            up = await service.get(input.provision_id)
            existing = await session.scalar(
                select(Provision.id).where(
                    Provision.environment_id == input.environment_id,
                    Provision.action == "destroy",
                    Provision.reason == reason,
                )
            )
            if existing is not None:
                return existing
            env = await session.get(Environment, input.environment_id)
            provider = await session.get(Provider, up.provider_id)
            assert env is not None and provider is not None
            row = await service.request_destroy(env, provider, None, reason=reason)
            return row.id


def _refused_credentials(provider: str, credentials: dict[str, str]) -> str | None:
    """Why stored credentials may not be used (a row stored before the kubeconfig check),
    checked before the engine starts: an `exec` plugin must never run on this worker."""
    kubeconfig = credentials.get("kubeconfig")
    if kubeconfig is None:
        return None
    problem = kubeconfig_problem(kubeconfig, "credentials.kubeconfig")
    if problem is None:
        return None
    field, why = problem
    return (
        f"provider {provider}: {field}: {why}; the credentials were stored before this was "
        "checked: store them again without it (nothing was run)"
    )


async def _rows(session: AsyncSession, ids: list[uuid.UUID]) -> list[Resource]:
    return list(await session.scalars(select(Resource).where(Resource.id.in_(ids))))
