"""Notification channels: validated configuration per type, credentials encrypted at rest.

What a channel may show (`config`) and what it must never show (`secrets`) are separate
models per type, so a credential can never slip into a response by being in the wrong dict.
"""

from __future__ import annotations

import json
import secrets as random
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService, snapshot
from core.errors import NotFound, ValidationFailed
from core.identity.organizations import EVERYTHING, Visibility, check_name
from core.identity.teams import team_resource
from core.models.identity import Team
from core.models.notifications import NotificationChannel
from core.pagination import Page, PageRequest, paginate
from core.security.authorization import GLOBAL, Resource
from core.security.egress import EgressPolicy
from core.security.encryption import installed_keyring, row_aad

ChannelType = Literal["slack", "email", "webhook"]
SLACK_TEAM_ID = r"^[TE][A-Z0-9]{2,20}$"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
Email = Annotated[str, Field(pattern=_EMAIL, max_length=320)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackConfig(_Strict):
    channel: str | None = Field(
        None,
        pattern=r"^[#@]?[\w.-]{1,80}$",
        description="Channel name or id (#deploys, C0123); omit for direct messages only",
    )
    team_id: str | None = Field(
        None,
        pattern=SLACK_TEAM_ID,
        description="The Slack workspace (team id, T0123) whose button presses are accepted; "
        "asked from Slack (auth.test) when omitted at creation",
    )


class SlackSecrets(_Strict):
    bot_token: str = Field(pattern=r"^xox[bpe]-[\w-]{8,}$", description="A Slack bot token")


class EmailConfig(_Strict):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = Field(None, max_length=255)
    from_address: Email
    to: list[Email] = Field(
        default_factory=list, max_length=100, description="Recipients of channel messages"
    )


class EmailSecrets(_Strict):
    password: str | None = Field(None, max_length=1000)


class WebhookConfig(_Strict):
    url: str = Field(max_length=2048)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or url[-3:] == "://":
            raise ValueError("must be an http:// or https:// URL")
        return url


class WebhookSecrets(_Strict):
    signing_secret: str | None = Field(
        None, min_length=16, max_length=200, description="Generated when omitted"
    )


CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "slack": SlackConfig,
    "email": EmailConfig,
    "webhook": WebhookConfig,
}
SECRET_MODELS: dict[str, type[BaseModel]] = {
    "slack": SlackSecrets,
    "email": EmailSecrets,
    "webhook": WebhookSecrets,
}


def _validated(model: type[BaseModel], data: dict[str, Any], field: str) -> dict[str, Any]:
    try:
        return model.model_validate(data).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = [
            {
                "field": ".".join([field, *(str(p) for p in err["loc"])]),
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        raise ValidationFailed(
            f"{field}: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
            details=problems,
        ) from None


# A ciphertext only decrypts in this column of its own row (row_aad): copied to another
# channel's row, it fails, so a database writer cannot swap two channels' credentials.
SECRETS_PURPOSE = "notification_channels.secrets"


async def check_destinations(config: dict[str, Any] | None, egress: EgressPolicy) -> None:
    """422 `egress_refused` when the webhook `url` or the SMTP `host` of a channel's `config`
    (or of a change to it) is, or resolves to, an address the egress guard refuses. Called
    before any database work: resolving a name holds no transaction open."""
    if not config:
        return
    if isinstance(config.get("url"), str):
        await egress.check_url(config["url"], field="config.url")
    if isinstance(config.get("host"), str):
        await egress.check_host(config["host"], field="config.host")


async def team_channel_ids(session: AsyncSession, team_id: uuid.UUID) -> list[uuid.UUID]:
    """A team's enabled channels, where its services' events (health, pipelines) are sent."""
    found = await session.scalars(
        select(NotificationChannel.id)
        .where(
            NotificationChannel.team_id == team_id,
            NotificationChannel.deleted_at.is_(None),
            NotificationChannel.enabled.is_(True),
        )
        .order_by(NotificationChannel.created_at, NotificationChannel.id)
    )
    return list(found)


def channel_secrets(channel: NotificationChannel) -> dict[str, Any]:
    """The decrypted credentials (only for delivery activities; never for responses)."""
    if not channel.secrets:
        return {}
    aad = row_aad(SECRETS_PURPOSE, channel.id)
    return dict(json.loads(installed_keyring().decrypt_str(channel.secrets, aad=aad)))


def _store_secrets(channel: NotificationChannel, values: dict[str, Any]) -> None:
    if channel.id is None:  # the id is part of the associated data: give it one now
        channel.id = uuid.uuid4()
    aad = row_aad(SECRETS_PURPOSE, channel.id)
    channel.secrets = (
        installed_keyring().encrypt_str(json.dumps(values), aad=aad) if values else None
    )
    channel.secret_names = sorted(values)


@dataclass(frozen=True)
class ChannelFilter:
    type: str | None = None
    team_id: uuid.UUID | None = None
    q: str | None = None
    visible: Visibility = EVERYTHING


@dataclass
class CreatedChannel:
    channel: NotificationChannel
    generated_secret: str | None  # a webhook signing secret made for the caller, shown once


class ChannelService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def resource(self, team_id: uuid.UUID | None) -> Resource:
        """Where a channel of `team_id` sits, for authorization (no team: platform-wide)."""
        if team_id is None:
            return GLOBAL
        team = await self.session.get(Team, team_id)
        if team is None or team.is_deleted:
            raise ValidationFailed(
                "team_id does not name a team",
                details=[{"field": "team_id", "message": "no such team"}],
            )
        return team_resource(team)

    async def create(
        self,
        *,
        type: ChannelType,
        name: str,
        config: dict[str, Any],
        secrets: dict[str, Any],
        team_id: uuid.UUID | None = None,
        enabled: bool = True,
    ) -> CreatedChannel:
        clean_config = _validated(CONFIG_MODELS[type], config, "config")
        clean_secrets = _validated(SECRET_MODELS[type], secrets, "secrets")
        generated = None
        if type == "webhook" and "signing_secret" not in clean_secrets:
            generated = clean_secrets["signing_secret"] = "whsec_" + random.token_urlsafe(32)
        channel = NotificationChannel(
            type=type, name=check_name(name), team_id=team_id, config=clean_config, enabled=enabled
        )
        _store_secrets(channel, clean_secrets)
        self.session.add(channel)
        await self.session.flush()
        await self.audit.record(
            "notification_channel.create",
            "notification_channel",
            channel.id,
            after=snapshot(channel),
        )
        return CreatedChannel(channel, generated)

    async def get(self, channel_id: uuid.UUID) -> NotificationChannel:
        channel = await self.session.get(NotificationChannel, channel_id)
        if channel is None or channel.is_deleted:
            raise NotFound("notification channel not found", details={"id": str(channel_id)})
        return channel

    def _query(self, f: ChannelFilter) -> Select[NotificationChannel]:
        stmt = select(NotificationChannel).where(NotificationChannel.deleted_at.is_(None))
        if not f.visible.everything:
            stmt = stmt.where(NotificationChannel.team_id.in_(f.visible.covered_teams()))
        if f.type:
            stmt = stmt.where(NotificationChannel.type == f.type)
        if f.team_id:
            stmt = stmt.where(NotificationChannel.team_id == f.team_id)
        if f.q:
            stmt = stmt.where(NotificationChannel.name.ilike(f"%{f.q}%"))
        return stmt

    async def list(self, f: ChannelFilter, page: PageRequest) -> Page[NotificationChannel]:
        return await paginate(
            self.session,
            self._query(f),
            page,
            order=(NotificationChannel.created_at, NotificationChannel.id),
        )

    async def update(
        self,
        channel: NotificationChannel,
        *,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        secrets: dict[str, Any] | None = None,
        enabled: bool | None = None,
    ) -> NotificationChannel:
        """`config` is merged into the current one (a key set to null is removed); `secrets`
        replaces only the credentials it names."""
        before = snapshot(channel)
        if name is not None:
            channel.name = check_name(name)
        if config is not None:
            merged = {**channel.config, **config}
            merged = {k: v for k, v in merged.items() if v is not None}
            channel.config = _validated(CONFIG_MODELS[channel.type], merged, "config")
        if secrets is not None:
            merged = {**channel_secrets(channel), **secrets}
            merged = {k: v for k, v in merged.items() if v is not None}
            _store_secrets(channel, _validated(SECRET_MODELS[channel.type], merged, "secrets"))
        if enabled is not None:
            channel.enabled = enabled
        await self.session.flush()
        await self.audit.record(
            "notification_channel.update",
            "notification_channel",
            channel.id,
            before=before,
            after={**snapshot(channel), "secrets_changed": sorted(secrets or {})},
        )
        return channel

    async def delete(self, channel: NotificationChannel) -> None:
        """Soft delete: past deliveries keep pointing at it; nothing new is sent through it."""
        before = snapshot(channel)
        channel.soft_delete()
        await self.audit.record(
            "notification_channel.delete", "notification_channel", channel.id, before=before
        )
