"""Which Slack workspace a Slack channel belongs to: its team id, pinned in the channel's
config. A button press signed by the platform's Slack app counts only when it comes from that
workspace (one app may be installed in many workspaces, some run by someone else).

The team id is given in `config.team_id`, or asked from Slack (`auth.test` with the channel's
bot token) when a channel is created, or its bot token replaced, without one. Called outside
any database transaction: it is a network call."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.db.transactions import guard
from core.errors import ValidationFailed
from core.models.notifications import NotificationChannel
from core.notifications.channels import SlackSecrets
from core.notifications.senders.errors import DeliveryError
from core.notifications.senders.slack import workspace_of


def pinned_team(channel: NotificationChannel) -> str | None:
    """The workspace a Slack channel accepts button presses from; None when none is pinned
    (a channel from before pinning: its presses are refused until one is set)."""
    team = (channel.config or {}).get("team_id")
    return str(team) if team else None


async def with_workspace(
    channel_type: str,
    config: dict[str, Any] | None,
    secrets: dict[str, Any] | None,
    *,
    base_url: str | None,
) -> dict[str, Any] | None:
    """`config` (a new channel's, or a change's) with `team_id` filled from Slack when a
    Slack bot token is given without one. ValidationFailed (422) when Slack cannot tell."""
    token = (secrets or {}).get("bot_token")
    if channel_type != "slack" or token is None or (config or {}).get("team_id"):
        return config
    try:
        SlackSecrets.model_validate({"bot_token": token})
    except ValidationError:
        return config  # the channel service refuses the token with its field named
    guard("Slack auth.test")
    try:
        team = await workspace_of(token=token, base_url=base_url)
    except DeliveryError as exc:
        raise ValidationFailed.on(
            "config.team_id",
            "the Slack workspace of this bot token could not be found with auth.test "
            f"({exc.reason}); check the token, or set config.team_id (T0123...) yourself",
        ) from None
    return {**(config or {}), "team_id": team}
