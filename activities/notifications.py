"""Notification activities: write the delivery records, deliver one, give one up, and update
a delivered Slack message in place. Retries are Temporal's (policy `notification_delivery`
in temporal.yaml); each attempt is recorded before and after it talks to the channel."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db.engine import transaction
from core.models.notifications import Notification, NotificationChannel
from core.notifications import dispatch
from core.notifications.channels import channel_secrets
from core.notifications.messages import (
    DeliveryOutcome,
    DeliveryRef,
    MessageUpdate,
    NotificationRequest,
    Prepared,
)
from core.notifications.rendering import RenderError, render_async
from core.notifications.senders import slack
from core.notifications.senders.errors import DeliveryError, SendResult

DELIVERY_ERROR = "DeliveryError"  # the ApplicationError type of a failed attempt


def _application_error(error: DeliveryError) -> ApplicationError:
    return ApplicationError(
        error.reason,
        type=DELIVERY_ERROR,
        non_retryable=not error.retryable,
        next_retry_delay=timedelta(seconds=error.retry_after) if error.retry_after else None,
    )


class NotificationActivities:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        senders: dispatch.SenderSettings,
        platform_url: str = "",
    ) -> None:
        self._sessions = sessions
        self._senders = senders
        self._platform_url = platform_url
        self._http: httpx.AsyncClient | None = None

    def _http_client(self) -> httpx.AsyncClient:
        """One client per worker for webhooks: connections and the TLS context are reused.
        Webhook URLs are users': every connection goes through the egress guard."""
        if self._http is None:
            self._http = self._senders.egress.client(follow_redirects=False)
        return self._http

    @activity.defn(name="notifications.prepare")
    async def prepare(self, request: NotificationRequest) -> Prepared:
        async with transaction(self._sessions) as session:
            return await dispatch.prepare(
                session,
                request,
                workflow_id=activity.info().workflow_id,
                platform_url=self._platform_url,
            )

    @activity.defn(name="notifications.deliver")
    async def deliver(self, ref: DeliveryRef) -> DeliveryOutcome:
        attempt = activity.info().attempt
        async with transaction(self._sessions) as session:
            started = await dispatch.begin_attempt(session, ref.notification_id, attempt)
        if started is None:
            return DeliveryOutcome(notification_id=ref.notification_id, status="delivered")
        notification, channel = started
        try:
            result = await dispatch.send(notification, channel, self._senders, self._http_client())
        except DeliveryError as exc:
            await self._finish(ref, attempt, error=exc)
            raise _application_error(exc) from None
        except Exception as exc:  # a bug or an unexpected library error: record, then retry
            error = DeliveryError(f"unexpected error: {type(exc).__name__}", retryable=True)
            await self._finish(ref, attempt, error=error)
            raise
        await self._finish(ref, attempt, result=result)
        return DeliveryOutcome(notification_id=ref.notification_id, status="delivered")

    async def _finish(
        self,
        ref: DeliveryRef,
        attempt: int,
        *,
        result: SendResult | None = None,
        error: DeliveryError | None = None,
    ) -> None:
        async with transaction(self._sessions) as session:
            await dispatch.finish_attempt(
                session, ref.notification_id, attempt, result=result, error=error
            )

    @activity.defn(name="notifications.mark_failed")
    async def mark_failed(self, outcome: DeliveryOutcome) -> None:
        async with transaction(self._sessions) as session:
            await dispatch.mark_failed(session, outcome.notification_id, outcome.error or "failed")

    @activity.defn(name="notifications.update_message")
    async def update_message(self, update: MessageUpdate) -> DeliveryOutcome:
        """chat.update on a delivered Slack message, rendered from `update.event`."""
        async with transaction(self._sessions) as session:
            notification = await session.get(Notification, update.notification_id)
            if notification is None or notification.status != "delivered":
                raise ApplicationError(
                    f"notification {update.notification_id} was not delivered; nothing to update",
                    non_retryable=True,
                )
            if notification.channel_type != "slack" or not notification.remote_id:
                raise ApplicationError(
                    "only a delivered Slack message can be updated in place", non_retryable=True
                )
            channel = await session.get(NotificationChannel, notification.channel_id)
            assert channel is not None
            source, _ = await dispatch.find_template(
                session, update.event, "slack", channel.team_id
            )
        try:
            message = await render_async(
                update.event, "slack", source, update.context, platform_url=self._platform_url
            )
        except RenderError as exc:
            raise ApplicationError(exc.message, non_retryable=True) from None
        payload = message.payload or {}
        try:
            await slack.update_message(
                token=channel_secrets(channel)["bot_token"],
                channel=notification.slack_channel or notification.recipient,
                ts=notification.remote_id,
                text=str(payload.get("text") or message.text),
                blocks=payload.get("blocks"),
                base_url=self._senders.slack_api_url,
            )
        except DeliveryError as exc:
            raise _application_error(exc) from None
        async with transaction(self._sessions) as session:
            stored = await session.get(Notification, update.notification_id)
            assert stored is not None
            stored.payload, stored.text = payload, message.text
        return DeliveryOutcome(notification_id=update.notification_id, status="delivered")
