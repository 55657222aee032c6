"""Linking a platform user to a Slack member, with proof: the user names a Slack channel (its
workspace and bot) and their Slack member id; the bot sends that member a one-time code by
direct message; the user types the code back. Only then does the Slack member count as the
user (for the Approve and Reject buttons). A Slack member id set in the notification
preferences is only where direct messages go: it never identifies anyone.

The code has 8 digits, lives 10 minutes, allows 5 wrong tries, and only its salted SHA-256 is
stored. A user may ask for 5 codes an hour. Every step is audited (never the code)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService
from core.db.transactions import guard
from core.db.types import utcnow
from core.errors import NotFound, RateLimited, ValidationFailed
from core.models.audit import AuditLog
from core.models.identity import User
from core.models.notifications import NotificationChannel
from core.models.slack import SlackLink, SlackLinkChallenge
from core.notifications.channels import channel_secrets
from core.notifications.senders.slack import post_message
from core.slack.workspaces import pinned_team

CODE_DIGITS = 8
CODE_LIFETIME = timedelta(minutes=10)
MAX_ATTEMPTS = 5
MAX_REQUESTS_PER_HOUR = 5
SLACK_USER_ID = r"^[UW][A-Z0-9]{2,20}$"


def _hash(challenge_id: uuid.UUID, code: str) -> str:
    return hashlib.sha256(f"{challenge_id}:{code}".encode()).hexdigest()


def _normalized(code: str) -> str:
    return "".join(ch for ch in code if ch.isdigit())


@dataclass(frozen=True)
class CodeToSend:
    """What the caller DMs (outside the transaction), then forgets."""

    challenge: SlackLinkChallenge
    code: str
    bot_token: str

    def text(self, email: str) -> str:
        minutes = int(CODE_LIFETIME.total_seconds() // 60)
        return (
            f"Your code to link this Slack account to the Developer Platform user {email}: "
            f"*{self.code}* (valid {minutes} minutes). If you did not ask for it, ignore this "
            "message: without the code nothing is linked."
        )


async def send_code(sending: CodeToSend, email: str, base_url: str | None) -> None:
    """DM the code to the Slack member (outside any transaction). Raises DeliveryError."""
    guard("Slack chat.postMessage (link code)")
    await post_message(
        token=sending.bot_token,
        channel=sending.challenge.slack_user_id,
        text=sending.text(email),
        blocks=None,
        base_url=base_url,
    )


class SlackLinkService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def links(self, user_id: uuid.UUID) -> list[SlackLink]:
        found = await self.session.scalars(
            select(SlackLink)
            .where(SlackLink.user_id == user_id)
            .order_by(SlackLink.created_at, SlackLink.id)
        )
        return list(found)

    async def pending(self, user_id: uuid.UUID) -> SlackLinkChallenge | None:
        return await self.session.scalar(
            select(SlackLinkChallenge).where(SlackLinkChallenge.user_id == user_id)
        )

    async def start(
        self, user_id: uuid.UUID, channel: NotificationChannel, slack_user_id: str
    ) -> CodeToSend:
        """A new code for `user_id` to prove they are `slack_user_id` in the workspace of
        `channel` (a Slack channel with a pinned workspace); replaces an earlier pending one."""
        if channel.type != "slack" or channel.is_deleted or not channel.enabled:
            raise ValidationFailed.on("channel_id", "must name an enabled Slack channel")
        team = pinned_team(channel)
        if team is None:
            raise ValidationFailed.on(
                "channel_id",
                "the channel has no Slack workspace pinned (config.team_id): ask its owner "
                "to set it",
            )
        token = channel_secrets(channel).get("bot_token")
        if not token:
            raise ValidationFailed.on("channel_id", "the channel has no bot token")
        since = utcnow() - timedelta(hours=1)
        asked = await self.session.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(
                AuditLog.action == "slack_link.request",
                AuditLog.resource_id == str(user_id),
                AuditLog.occurred_at >= since,
            )
        )
        if (asked or 0) >= MAX_REQUESTS_PER_HOUR:
            raise RateLimited(
                f"at most {MAX_REQUESTS_PER_HOUR} Slack link codes an hour: try again later",
                headers={"Retry-After": "3600"},
            )
        await self.session.execute(
            delete(SlackLinkChallenge).where(SlackLinkChallenge.user_id == user_id)
        )
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        challenge = SlackLinkChallenge(
            id=uuid.uuid4(),
            user_id=user_id,
            channel_id=channel.id,
            slack_team_id=team,
            slack_user_id=slack_user_id,
            expires_at=utcnow() + CODE_LIFETIME,
            attempts=0,
        )
        challenge.code_hash = _hash(challenge.id, code)
        self.session.add(challenge)
        await self.session.flush()
        await self.audit.record(
            "slack_link.request",
            "user",
            user_id,
            after={
                "channel_id": str(channel.id),
                "slack_team_id": team,
                "slack_user_id": slack_user_id,
                "expires_at": challenge.expires_at.isoformat(),
            },
        )
        return CodeToSend(challenge, code, str(token))

    async def abandon(self, challenge_id: uuid.UUID, reason: str) -> None:
        """The code could not be sent: forget it, and say why in the audit log."""
        challenge = await self.session.get(SlackLinkChallenge, challenge_id)
        if challenge is None:
            return
        await self.session.delete(challenge)
        await self.audit.record(
            "slack_link.send_failed",
            "user",
            challenge.user_id,
            after={"slack_user_id": challenge.slack_user_id, "reason": reason},
        )

    async def confirm(self, user_id: uuid.UUID, code: str) -> SlackLink:
        """Verify the pending link with `code`. A wrong, late or exhausted code raises with
        `keep_changes`, so the spent attempt stays counted."""
        challenge = await self.pending(user_id)
        if challenge is None:
            raise NotFound("no Slack link is waiting for a code: ask for a code first")
        if challenge.expires_at <= utcnow():
            await self._drop(challenge, "expired")
            raise ValidationFailed(
                "the code expired: ask for a new one",
                details=[{"field": "code", "message": "expired"}],
                keep_changes=True,
            )
        # Count the try first, atomically, so concurrent guesses cannot exceed the bound.
        counted = await self.session.execute(
            update(SlackLinkChallenge)
            .where(
                SlackLinkChallenge.id == challenge.id,
                SlackLinkChallenge.attempts < MAX_ATTEMPTS,
            )
            .values(attempts=SlackLinkChallenge.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if getattr(counted, "rowcount", 0) != 1:
            await self._drop(challenge, "too many wrong codes")
            raise ValidationFailed(
                "too many wrong codes: ask for a new one",
                details=[{"field": "code", "message": "no tries left"}],
                keep_changes=True,
            )
        await self.session.refresh(challenge)
        if not hmac.compare_digest(_hash(challenge.id, _normalized(code)), challenge.code_hash):
            left = MAX_ATTEMPTS - challenge.attempts
            await self.audit.record(
                "slack_link.confirm_failed",
                "user",
                user_id,
                after={"slack_user_id": challenge.slack_user_id, "tries_left": left},
            )
            if left <= 0:
                await self._drop(challenge, "too many wrong codes")
            raise ValidationFailed(
                f"wrong code ({left} {'try' if left == 1 else 'tries'} left)",
                details=[{"field": "code", "message": "wrong code"}],
                keep_changes=True,
            )
        return await self._link(challenge)

    async def _drop(self, challenge: SlackLinkChallenge, reason: str) -> None:
        await self.session.delete(challenge)
        await self.audit.record(
            "slack_link.abandon",
            "user",
            challenge.user_id,
            after={"slack_user_id": challenge.slack_user_id, "reason": reason},
        )

    async def _link(self, challenge: SlackLinkChallenge) -> SlackLink:
        """The verified link; replaces the user's earlier one in that workspace, and anyone
        else's link to that Slack member (who has just proved to be this user)."""
        replaced = list(
            await self.session.scalars(
                select(SlackLink).where(
                    SlackLink.slack_team_id == challenge.slack_team_id,
                    or_(
                        SlackLink.user_id == challenge.user_id,
                        SlackLink.slack_user_id == challenge.slack_user_id,
                    ),
                )
            )
        )
        for old in replaced:
            await self.session.delete(old)
        await self.session.delete(challenge)
        await self.session.flush()
        link = SlackLink(
            user_id=challenge.user_id,
            slack_team_id=challenge.slack_team_id,
            slack_user_id=challenge.slack_user_id,
            channel_id=challenge.channel_id,
            verified_at=utcnow(),
        )
        self.session.add(link)
        await self.session.flush()
        await self.audit.record(
            "slack_link.verify",
            "user",
            challenge.user_id,
            before={"replaced": [_as_dict(old) for old in replaced]} if replaced else None,
            after=_as_dict(link),
        )
        return link

    async def unlink(self, user_id: uuid.UUID, link_id: uuid.UUID) -> None:
        link = await self.session.get(SlackLink, link_id)
        if link is None or link.user_id != user_id:
            raise NotFound("Slack link not found", details={"id": str(link_id)})
        await self.session.delete(link)
        await self.audit.record("slack_link.delete", "user", user_id, before=_as_dict(link))


async def linked_user(session: AsyncSession, team_id: str, slack_user_id: str) -> User | None:
    """The platform user with a verified link to this Slack member of this workspace."""
    user = await session.scalar(
        select(User)
        .join(SlackLink, SlackLink.user_id == User.id)
        .where(SlackLink.slack_team_id == team_id, SlackLink.slack_user_id == slack_user_id)
    )
    return None if user is None or user.is_deleted else user


def _as_dict(link: SlackLink) -> dict[str, str]:
    return {
        "id": str(link.id),
        "slack_team_id": link.slack_team_id,
        "slack_user_id": link.slack_user_id,
        "verified_at": link.verified_at.isoformat(),
    }
