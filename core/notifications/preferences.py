"""Each user's notification preferences: per channel type and event (or `*` for every event),
on or off, with settings (a Slack user id for direct messages, another email address)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService
from core.errors import ValidationFailed
from core.models.notifications import UserNotificationPreference
from core.notifications.channels import Email
from core.notifications.rendering import events


class SlackPreferenceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slack_user_id: str | None = Field(
        None, pattern=r"^[UW][A-Z0-9]{2,20}$", description="Your Slack member id, for DMs"
    )


class EmailPreferenceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: Email | None = Field(None, description="Send here instead of the account's email")


SETTINGS_MODELS: dict[str, type[BaseModel]] = {
    "slack": SlackPreferenceSettings,
    "email": EmailPreferenceSettings,
}


class PreferenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel_type: Literal["slack", "email"]
    event: str = Field("*", max_length=100, description="An event name, or * for every event")
    enabled: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)


def _check(index: int, pref: PreferenceIn) -> dict[str, Any]:
    field = f"preferences[{index}]"
    if pref.event != "*" and pref.event not in events():
        raise ValidationFailed(
            f"{field}.event: unknown event {pref.event!r}",
            details=[{"field": f"{field}.event", "message": f"one of *, {', '.join(events())}"}],
        )
    try:
        model = SETTINGS_MODELS[pref.channel_type].model_validate(pref.settings)
    except ValueError as exc:
        raise ValidationFailed(
            f"{field}.settings: {exc}".splitlines()[0] + " (see docs/notifications.md)",
            details=[{"field": f"{field}.settings", "message": str(exc)}],
        ) from None
    return model.model_dump(exclude_none=True)


class PreferenceService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> list[UserNotificationPreference]:
        stmt = (
            select(UserNotificationPreference)
            .where(UserNotificationPreference.user_id == user_id)
            .order_by(UserNotificationPreference.channel_type, UserNotificationPreference.event)
        )
        return list((await self.session.scalars(stmt)).all())

    async def replace(
        self, user_id: uuid.UUID, preferences: list[PreferenceIn]
    ) -> list[UserNotificationPreference]:
        """The user's whole set becomes `preferences` (validated first; nothing changes on a
        bad entry)."""
        cleaned = [_check(i, p) for i, p in enumerate(preferences)]
        keys = [(p.channel_type, p.event) for p in preferences]
        duplicates = sorted({f"{t}/{e}" for t, e in keys if keys.count((t, e)) > 1})
        if duplicates:
            raise ValidationFailed(
                f"one entry per channel type and event; repeated: {', '.join(duplicates)}",
                details=[{"field": "preferences", "message": f"repeated {d}"} for d in duplicates],
            )
        before = [_as_dict(p) for p in await self.get(user_id)]
        await self.session.execute(
            delete(UserNotificationPreference).where(UserNotificationPreference.user_id == user_id)
        )
        for pref, settings in zip(preferences, cleaned, strict=True):
            self.session.add(
                UserNotificationPreference(
                    user_id=user_id,
                    channel_type=pref.channel_type,
                    event=pref.event,
                    enabled=pref.enabled,
                    settings=settings,
                )
            )
        await self.session.flush()
        after = await self.get(user_id)
        await AuditService(self.session).record(
            "notification_preferences.update",
            "user",
            user_id,
            before={"preferences": before},
            after={"preferences": [_as_dict(p) for p in after]},
        )
        return after


def _as_dict(pref: UserNotificationPreference) -> dict[str, Any]:
    return {
        "channel_type": pref.channel_type,
        "event": pref.event,
        "enabled": pref.enabled,
        "settings": pref.settings,
    }
