"""Cloud providers of an organization: their type, regions and encrypted credentials.

Credentials are a small map of named strings (which names depends on the type) encrypted
together with the key ring, bound to this column; responses and the audit log show only
their names. `credentials_of()` decrypts them for the provisioning activity alone."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import Conflict, NotFound, ValidationFailed
from core.identity.organizations import Visibility, check_slug, flush_unique
from core.infrastructure.kubeconfig import kubeconfig_problem
from core.models.identity import Organization
from core.models.infrastructure import Provider
from core.pagination import Page, PageRequest, paginate
from core.security.encryption import installed_keyring, row_aad

PROVIDER_TYPES: tuple[str, ...] = ("aws", "gcp", "azure", "kubernetes")
# The credential names each type takes (Pulumi's provider settings of the same meaning).
CREDENTIAL_NAMES: dict[str, tuple[str, ...]] = {
    "aws": ("access_key_id", "secret_access_key", "session_token"),
    "gcp": ("credentials_json",),
    "azure": ("client_id", "client_secret", "tenant_id", "subscription_id"),
    "kubernetes": ("kubeconfig",),
}
_REGION = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
# Bound to the row (row_aad): credentials copied into another provider's row do not decrypt.
CREDENTIALS_PURPOSE = "providers.credentials"


@dataclass
class ProviderFields:
    name: str
    type: str
    regions: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderFilter:
    visible: Visibility  # infrastructure:read
    org_id: uuid.UUID | None = None
    type: str | None = None


def credentials_of(provider: Provider) -> dict[str, str]:
    """The decrypted credentials: only for the activities that call the cloud."""
    if not provider.credentials:
        return {}
    aad = row_aad(CREDENTIALS_PURPOSE, provider.id)
    return dict(json.loads(installed_keyring().decrypt_str(provider.credentials, aad=aad)))


def _check(fields: ProviderFields) -> None:
    if fields.type not in PROVIDER_TYPES:
        raise ValidationFailed.on("type", f"type must be one of {', '.join(PROVIDER_TYPES)}")
    for i, region in enumerate(fields.regions):
        if not _REGION.fullmatch(region):
            raise ValidationFailed.on(
                f"regions[{i}]", f"{region!r} is not a region name like us-east-1 or westeurope"
            )
    allowed = CREDENTIAL_NAMES[fields.type]
    unknown = sorted(set(fields.credentials) - set(allowed))
    if unknown:
        raise ValidationFailed.on(
            "credentials",
            f"{fields.type} credentials take {', '.join(allowed)} (not {', '.join(unknown)})",
        )
    for name, value in fields.credentials.items():
        if not isinstance(value, str) or not value:
            raise ValidationFailed.on(f"credentials.{name}", "must be a non-empty string")
    kubeconfig = fields.credentials.get("kubeconfig")
    if fields.type == "kubernetes" and kubeconfig is not None:
        problem = kubeconfig_problem(kubeconfig, "credentials.kubeconfig")
        if problem is not None:
            raise ValidationFailed.on(*problem)


class ProviderService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def get(self, provider_id: uuid.UUID) -> Provider:
        row = await self.session.get(Provider, provider_id)
        if row is None or row.is_deleted:
            raise NotFound(f"provider {provider_id} not found")
        return row

    async def create(self, org: Organization, fields: ProviderFields) -> Provider:
        name = check_slug(fields.name, "name", 63)
        _check(fields)
        taken = await self.session.scalar(
            select(Provider.id).where(
                Provider.org_id == org.id, Provider.name == name, Provider.deleted_at.is_(None)
            )
        )
        message = f"the organization already has a provider named {name}"
        if taken is not None:
            raise Conflict(message)
        row_id = uuid.uuid4()  # before encrypting: the credentials are bound to it
        row = Provider(
            id=row_id,
            org_id=org.id,
            name=name,
            type=fields.type,
            regions=fields.regions,
            config=fields.config,
            credential_names=sorted(fields.credentials),
            credentials=(
                installed_keyring().encrypt_str(
                    json.dumps(fields.credentials), aad=row_aad(CREDENTIALS_PURPOSE, row_id)
                )
                if fields.credentials
                else None
            ),
        )
        self.session.add(row)
        await flush_unique(self.session, message)
        after = {k: v for k, v in snapshot(row).items() if k != "credentials"}
        await self.audit.record("provider.create", "provider", row.id, after=after)
        return row

    def _query(self, f: ProviderFilter) -> Select[Any]:
        stmt = select(Provider).where(Provider.deleted_at.is_(None))
        if not f.visible.everything:
            stmt = stmt.where(Provider.org_id.in_(f.visible.organization_ids))
        if f.org_id is not None:
            stmt = stmt.where(Provider.org_id == f.org_id)
        if f.type is not None:
            stmt = stmt.where(Provider.type == f.type)
        return stmt

    async def search(self, f: ProviderFilter, page: PageRequest) -> Page[Provider]:
        return await paginate(
            self.session, self._query(f), page, order=(Provider.name, Provider.id)
        )
