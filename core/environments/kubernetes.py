"""Where an organization's Kubernetes environments may deploy: the namespace (derived from the
organization and environment, chosen otherwise only by a platform admin) and the kubeconfig
contexts (clusters) on the organization's allow-list, kept by a platform admin.

A namespace is `<org-slug>-<env-name>`; when that is longer than 63 characters it is cut and
ends with 8 hex characters of a hash of the organization's id and the environment's name, so
it stays a DNS-1123 label and distinct. Two organizations' `production` environments thus get
different namespaces, and no environment writes where another one does (a namespace held by
a live environment on the same cluster is refused, 409). An environment naming no context
deploys to the worker's default cluster, which every organization may use; a named context
must be on the organization's allow-list, at creation and again at every deploy."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService
from core.deploy.kubernetes import NAMESPACE_MAX, namespace_problem
from core.errors import Conflict, Forbidden, ValidationFailed
from core.identity.organizations import flush_unique
from core.models.environments import Environment, KubernetesContext
from core.models.identity import Organization
from core.security.authorization import GLOBAL, Principal

# Holding this platform-wide (a global grant) is what makes a platform admin here.
PLATFORM_PERMISSION = "organizations:write"
CONTEXT_MAX = 255
CONTEXTS_MAX = 100
_HASH_LENGTH = 8


def is_platform_admin(principal: Principal) -> bool:
    return principal.can(PLATFORM_PERMISSION, GLOBAL)


def derived_namespace(org: Organization, env_name: str) -> str:
    """`<org-slug>-<env-name>`, or a cut of it ending in a hash when over 63 characters."""
    full = f"{org.slug}-{env_name}".rstrip("-")
    if len(full) <= NAMESPACE_MAX:
        return full
    digest = hashlib.sha256(f"{org.id}/{env_name}".encode()).hexdigest()[:_HASH_LENGTH]
    return f"{full[: NAMESPACE_MAX - _HASH_LENGTH - 1].rstrip('-')}-{digest}"


def check_context(value: str, field: str) -> str:
    if (
        not value
        or len(value) > CONTEXT_MAX
        or any(not c.isprintable() or c.isspace() for c in value)
    ):
        raise ValidationFailed.on(
            field, f"a kubeconfig context name is 1 to {CONTEXT_MAX} characters without spaces"
        )
    return value


async def allowed_contexts(session: AsyncSession, org_id: uuid.UUID) -> list[str]:
    return list(
        await session.scalars(
            select(KubernetesContext.context)
            .where(KubernetesContext.org_id == org_id)
            .order_by(KubernetesContext.context)
        )
    )


async def context_problem(session: AsyncSession, env: Environment) -> str | None:
    """Why `env` may not deploy to its context now (None when it may): checked at every
    deploy, so a context taken off the allow-list stops deploys at once."""
    if env.cluster_id is None:
        return None
    if env.cluster_id in await allowed_contexts(session, env.org_id):
        return None
    return (
        f"the kubeconfig context {env.cluster_id!r} is not on the allow-list of the "
        "environment's organization (a platform admin keeps it: "
        f"PUT /organizations/{env.org_id}/kubernetes-contexts)"
    )


async def placement(
    session: AsyncSession,
    org: Organization,
    env_name: str,
    *,
    namespace: str | None,
    cluster_id: str | None,
    principal: Principal,
) -> str:
    """The namespace of a new Kubernetes environment, once its context and namespace are
    allowed: a namespace other than the derived one only from a platform admin (403)."""
    if cluster_id is not None:
        check_context(cluster_id, "cluster_id")
        if cluster_id not in await allowed_contexts(session, org.id):
            raise ValidationFailed.on(
                "cluster_id",
                f"the kubeconfig context {cluster_id!r} is not on this organization's "
                "allow-list (a platform admin adds it)",
            )
    derived = derived_namespace(org, env_name)
    if namespace is not None and namespace != derived and not is_platform_admin(principal):
        raise Forbidden(
            f"the namespace is derived from the organization and environment ({derived}); "
            f"only a platform admin ({PLATFORM_PERMISSION} platform-wide) may choose another",
            details={"field": "namespace", "namespace": derived},
        )
    chosen = namespace or derived
    problem = namespace_problem(chosen)
    if problem is not None:
        raise ValidationFailed.on("namespace", problem)
    holder = await session.scalar(
        select(Environment.id).where(
            Environment.target == "kubernetes",
            Environment.namespace == chosen,
            Environment.cluster_id.is_(None)
            if cluster_id is None
            else Environment.cluster_id == cluster_id,
            Environment.deleted_at.is_(None),
        )
    )
    if holder is not None:
        raise Conflict(
            f"namespace {chosen} is already used by another environment on this cluster",
            details={"field": "namespace"},
        )
    return chosen


class KubernetesContextService:
    """The allow-list of one organization's kubeconfig contexts (set as a whole, audited)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def of(self, org: Organization) -> list[str]:
        return await allowed_contexts(self.session, org.id)

    async def replace(self, org: Organization, contexts: Sequence[str]) -> list[str]:
        wanted = [check_context(c, f"contexts[{i}]") for i, c in enumerate(contexts)]
        if len(wanted) > CONTEXTS_MAX:
            raise ValidationFailed.on("contexts", f"at most {CONTEXTS_MAX} contexts")
        twice = sorted({c for c in wanted if wanted.count(c) > 1})
        if twice:
            raise ValidationFailed.on("contexts", f"contexts given twice: {', '.join(twice)}")
        rows = {
            row.context: row
            for row in await self.session.scalars(
                select(KubernetesContext).where(KubernetesContext.org_id == org.id)
            )
        }
        before = sorted(rows)
        for context in set(rows) - set(wanted):
            await self.session.delete(rows[context])
        for context in set(wanted) - set(rows):
            self.session.add(KubernetesContext(org_id=org.id, context=context))
        await flush_unique(self.session, "the allow-list changed meanwhile: read it and retry")
        after = sorted(wanted)
        if before != after:
            await self.audit.record(
                "organization.kubernetes_contexts.update",
                "organization",
                org.id,
                before={"contexts": before},
                after={"contexts": after},
            )
        return after
