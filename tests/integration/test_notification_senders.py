"""The delivery senders against real local servers: Slack's Web API stand-in, an SMTP server,
a webhook receiver. Every failure must be a DeliveryError whose reason carries no secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from email.message import EmailMessage

import httpx
import pytest

from core.notifications.senders import email, slack, webhook
from core.notifications.senders.errors import DeliveryError, retry_after_seconds
from tests.helpers import free_port, local_egress
from tests.standins.slack_api import SlackApiStandin
from tests.standins.smtp import SmtpStandin
from tests.standins.webhook_receiver import WebhookReceiver, signature_is_valid

SLACK_TOKEN = "xoxb-1111-2222-sekrit-token"
SMTP_PASSWORD = "smtp-pa55word-sekrit"
WEBHOOK_SECRET = "whsec-sekrit-signing-key"
SECRETS = (SLACK_TOKEN, SMTP_PASSWORD, WEBHOOK_SECRET)

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished"}}]


def assert_no_secret(error: DeliveryError, *extra: str) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in error.reason
        assert secret not in str(error)
        assert secret not in repr(error)


@pytest.fixture
def slack_api() -> Iterator[SlackApiStandin]:
    with SlackApiStandin(tokens={SLACK_TOKEN}, channels={"C123": "general"}) as standin:
        yield standin


@pytest.fixture
def smtp_server() -> Iterator[SmtpStandin]:
    with SmtpStandin() as standin:
        yield standin


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=WEBHOOK_SECRET) as receiver:
        yield receiver


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


# -- Slack ------------------------------------------------------------------------------------
async def post(standin: SlackApiStandin, **overrides: object) -> slack.SendResult:
    args: dict[str, object] = {
        "token": SLACK_TOKEN,
        "channel": "C123",
        "text": "Deploy finished",
        "blocks": BLOCKS,
        "base_url": standin.base_url,
        "timeout": 5,
    }
    args.update(overrides)
    return await slack.post_message(**args)  # type: ignore[arg-type]


async def post_failure(standin: SlackApiStandin, **overrides: object) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await post(standin, **overrides)
    assert_no_secret(caught.value)
    return caught.value


async def test_slack_post_message(slack_api: SlackApiStandin) -> None:
    result = await post(slack_api)

    assert result.remote_id == "1700000000.000100"
    assert result.details == {"channel": "C123", "ts": "1700000000.000100"}
    [request] = slack_api.requests
    assert request.method == "chat.postMessage"
    assert request.token == SLACK_TOKEN
    assert request.channel == "C123"
    assert request.text == "Deploy finished"
    assert request.blocks == BLOCKS
    assert request.ok
    assert slack_api.messages[("C123", result.remote_id)].blocks == BLOCKS

    second = await post(slack_api, channel="#general", blocks=None, text="again")
    assert second.details["channel"] == "C123"
    assert second.remote_id is not None and second.remote_id > result.remote_id


async def test_slack_rate_limit_is_retryable_with_retry_after(slack_api: SlackApiStandin) -> None:
    slack_api.rate_limit_next(2, retry_after=7)

    error = await post_failure(slack_api)

    assert error.retryable
    assert error.retry_after == 7
    assert error.status == 429
    # slack_sdk's own retry handlers are off: exactly one request per attempt
    assert len(slack_api.requests) == 1


async def test_slack_server_error_is_retryable(slack_api: SlackApiStandin) -> None:
    slack_api.fail_next(1, status=500)

    error = await post_failure(slack_api)

    assert error.retryable
    assert error.status == 500
    assert len(slack_api.requests) == 1
    assert (await post(slack_api)).remote_id  # the next attempt goes through


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"channel": "C999"}, "channel_not_found"),
        ({"token": "xoxb-9999-unknown-token"}, "invalid_auth"),
        ({"blocks": [{"text": "no type"}]}, "invalid_blocks"),
    ],
)
async def test_slack_refusals_are_permanent(
    slack_api: SlackApiStandin, overrides: dict[str, object], code: str
) -> None:
    error = await post_failure(slack_api, **overrides)

    assert not error.retryable
    assert error.reason.startswith(f"Slack refused the message: {code}")
    assert_no_secret(error, "xoxb-9999-unknown-token")
    assert slack_api.requests[-1].error == code


async def test_slack_unreachable_is_retryable() -> None:
    error = await post_failure(SlackApiStandin(), base_url=closed_port_url() + "api/")

    assert error.retryable
    assert error.reason.startswith("Slack could not be reached")


async def test_slack_update_message(slack_api: SlackApiStandin) -> None:
    posted = await post(slack_api, text="Deploying…")
    assert posted.remote_id is not None

    updated = await slack.update_message(
        token=SLACK_TOKEN,
        channel=posted.details["channel"],
        ts=posted.remote_id,
        text="Deployed",
        blocks=[{"type": "section", "text": {"type": "plain_text", "text": "Deployed"}}],
        base_url=slack_api.base_url,
    )

    assert updated.remote_id == posted.remote_id
    message = slack_api.messages[("C123", posted.remote_id)]
    assert (message.text, message.edits) == ("Deployed", 1)
    assert message.blocks[0]["text"]["text"] == "Deployed"
    assert [r.method for r in slack_api.requests] == ["chat.postMessage", "chat.update"]

    with pytest.raises(DeliveryError) as caught:
        await slack.update_message(
            token=SLACK_TOKEN,
            channel="C123",
            ts="1.000000",
            text="x",
            blocks=None,
            base_url=slack_api.base_url,
        )
    assert not caught.value.retryable
    assert "message_not_found" in caught.value.reason
    assert_no_secret(caught.value)


# -- email ------------------------------------------------------------------------------------
def smtp_settings(server: SmtpStandin, **overrides: object) -> email.SmtpSettings:
    args: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "security": "none",
        "username": None,
        "password": None,
        "from_address": "IDP Platform <platform@idp.example.com>",
        "timeout": 5,
    }
    args.update(overrides)
    return email.SmtpSettings(**args)  # type: ignore[arg-type]


async def send(settings: email.SmtpSettings, **overrides: object) -> email.SendResult:
    args: dict[str, object] = {
        "to": ["dev@example.com"],
        "subject": "Déploiement réussi ✓",
        "text": "Deploy of api finished.",
        "html": "<p>Deploy of <b>api</b> finished.</p>",
        "egress": local_egress(),  # the stand-in listens on loopback
    }
    args.update(overrides)
    return await email.send_email(settings, **args)  # type: ignore[arg-type]


async def send_failure(settings: email.SmtpSettings, **overrides: object) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await send(settings, **overrides)
    assert_no_secret(caught.value)
    return caught.value


async def test_email_multipart_message(smtp_server: SmtpStandin) -> None:
    result = await send(
        smtp_settings(smtp_server),
        headers={"X-IDP-Event": "deploy.succeeded", "X-IDP-Delivery": "d-1"},
    )

    [received] = smtp_server.messages
    assert received.mail_from == "platform@idp.example.com"
    assert received.rcpt_tos == ["dev@example.com"]
    message = received.message
    assert message["Subject"] == "Déploiement réussi ✓"
    assert message["From"] == "IDP Platform <platform@idp.example.com>"
    assert message["To"] == "dev@example.com"
    assert message["Message-ID"] == result.remote_id
    assert result.remote_id is not None and result.remote_id.endswith("@idp.example.com>")
    assert message["X-IDP-Event"] == "deploy.succeeded"
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text, html = (p for p in parts if isinstance(p, EmailMessage))
    assert text.get_content().strip() == "Deploy of api finished."
    assert html.get_content().strip() == "<p>Deploy of <b>api</b> finished.</p>"


async def test_email_text_only_and_message_id_domain(smtp_server: SmtpStandin) -> None:
    result = await send(smtp_settings(smtp_server), html=None, message_id_domain="mail.test")

    message = smtp_server.messages[-1].message
    assert message.get_content_type() == "text/plain"
    assert result.remote_id is not None and result.remote_id.endswith("@mail.test>")


async def test_email_server_down_is_retryable_then_recovers(smtp_server: SmtpStandin) -> None:
    settings = smtp_settings(smtp_server)
    smtp_server.stop()

    error = await send_failure(settings)
    assert error.retryable
    assert f"{smtp_server.port}" in error.reason

    smtp_server.start()  # same port again
    await send(settings)
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize(("code", "retryable"), [(550, False), (450, True)])
async def test_email_recipient_refused(
    smtp_server: SmtpStandin, code: int, retryable: bool
) -> None:
    smtp_server.refuse_recipient("gone@example.com", code=code, message="mailbox unavailable")

    error = await send_failure(smtp_settings(smtp_server), to=["gone@example.com"])

    assert error.retryable is retryable
    assert error.status == code
    assert error.reason == f"recipient refused: gone@example.com: {code} mailbox unavailable"
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "address",
    ["not-an-address", "dev@localhost-no-dot", "two@@example.com", "dev@example.com\r\nBcc: x@y.z"],
)
async def test_email_invalid_address_fails_before_connecting(address: str) -> None:
    # Nothing listens on the port: a connection attempt would give a retryable error.
    settings = email.SmtpSettings(
        host="127.0.0.1",
        port=free_port(),
        security="none",
        username=None,
        password=None,
        from_address="platform@idp.example.com",
    )

    error = await send_failure(settings, to=[address])

    assert not error.retryable
    assert error.reason.startswith("invalid recipient address")

    error = await send_failure(
        email.SmtpSettings(**{**settings.__dict__, "from_address": address}),
        to=["dev@example.com"],
    )
    assert not error.retryable
    assert error.reason.startswith("invalid sender address")


async def test_email_starttls_missing_is_a_permanent_error(smtp_server: SmtpStandin) -> None:
    error = await send_failure(smtp_settings(smtp_server, security="starttls"))

    assert not error.retryable
    assert "does not offer STARTTLS" in error.reason
    assert smtp_server.messages == []


async def test_email_implicit_tls_against_plain_server_is_permanent(
    smtp_server: SmtpStandin,
) -> None:
    error = await send_failure(smtp_settings(smtp_server, security="tls"))

    assert not error.retryable
    assert "TLS" in error.reason


async def test_email_login() -> None:
    with SmtpStandin(users={"mailer": SMTP_PASSWORD}) as server:
        await send(smtp_settings(server, username="mailer", password=SMTP_PASSWORD))
        assert server.auth_attempts == [("mailer", True)]
        assert len(server.messages) == 1

        wrong = "wrong-pa55word-also-sekrit"
        error = await send_failure(smtp_settings(server, username="mailer", password=wrong))
        assert_no_secret(error, wrong)
        assert not error.retryable
        assert error.reason.startswith("SMTP authentication failed")
        assert len(server.messages) == 1


async def test_email_login_without_auth_support(smtp_server: SmtpStandin) -> None:
    settings = smtp_settings(smtp_server, username="mailer", password=SMTP_PASSWORD)
    assert SMTP_PASSWORD not in repr(settings)

    error = await send_failure(settings)

    assert not error.retryable
    assert "authentication" in error.reason


# -- webhooks ---------------------------------------------------------------------------------
PAYLOAD = {"event": "deploy.succeeded", "service": "api", "version": 7, "url": "https://x/y"}


async def deliver(url: str, **overrides: object) -> webhook.SendResult:
    args: dict[str, object] = {
        "url": url,
        "secret": WEBHOOK_SECRET,
        "payload": PAYLOAD,
        "delivery_id": "0b7e2c3a-delivery",
        "event": "deploy.succeeded",
        "timeout": 5,
        "egress": local_egress(),  # the receiver listens on loopback
    }
    args.update(overrides)
    return await webhook.post_webhook(**args)  # type: ignore[arg-type]


async def deliver_failure(url: str, **overrides: object) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await deliver(url, **overrides)
    assert_no_secret(caught.value)
    return caught.value


async def test_webhook_signed_delivery(webhook_receiver: WebhookReceiver) -> None:
    result = await deliver(webhook_receiver.url)

    assert result.details == {"status": "204"}
    [delivery] = webhook_receiver.deliveries
    assert delivery.signature_valid is True
    assert delivery.body == json.dumps(PAYLOAD, separators=(",", ":"), sort_keys=True).encode()
    assert delivery.json() == PAYLOAD
    assert delivery.delivery_id == "0b7e2c3a-delivery"
    assert delivery.event == "deploy.succeeded"
    assert delivery.header("Content-Type") == "application/json"
    assert delivery.header("User-Agent") == "idp-notifications/1"
    signature = delivery.header(webhook.SIGNATURE_HEADER)
    timestamp = delivery.header(webhook.TIMESTAMP_HEADER)
    assert signature is not None and timestamp is not None
    assert abs(int(timestamp) - time.time()) < 60
    assert webhook.verify(WEBHOOK_SECRET, timestamp, signature, delivery.body)


async def test_webhook_redelivery_is_deduped_by_delivery_id(
    webhook_receiver: WebhookReceiver,
) -> None:
    await deliver(webhook_receiver.url)
    await deliver(webhook_receiver.url)
    await deliver(webhook_receiver.url, delivery_id="another")

    assert len(webhook_receiver.deliveries) == 3
    assert [d.delivery_id for d in webhook_receiver.accepted] == ["0b7e2c3a-delivery", "another"]


async def test_webhook_without_secret_is_unsigned() -> None:
    with WebhookReceiver(secret=None) as receiver:
        await deliver(receiver.url, secret=None)

    [delivery] = receiver.deliveries
    assert delivery.header(webhook.SIGNATURE_HEADER) is None
    assert delivery.header(webhook.DELIVERY_HEADER) == "0b7e2c3a-delivery"


async def test_webhook_wrong_secret_is_refused(webhook_receiver: WebhookReceiver) -> None:
    other = "whsec-some-other-sekrit"
    error = await deliver_failure(webhook_receiver.url, secret=other)

    assert webhook_receiver.deliveries[0].signature_valid is False
    assert not error.retryable
    assert error.status == 401
    assert error.reason == "webhook receiver answered 401 Unauthorized"
    assert_no_secret(error, other)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 425])
async def test_webhook_transient_statuses_are_retryable(
    webhook_receiver: WebhookReceiver, status: int
) -> None:
    webhook_receiver.respond_next(1, status)

    error = await deliver_failure(webhook_receiver.url)

    assert error.retryable
    assert error.status == status
    assert error.retry_after is None
    await deliver(webhook_receiver.url)  # the retry succeeds


async def test_webhook_429_honours_retry_after(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.respond_next(1, 429, headers={"Retry-After": "12"})

    error = await deliver_failure(webhook_receiver.url)

    assert error.retryable
    assert error.status == 429
    assert error.retry_after == 12


async def test_webhook_404_is_permanent(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.respond_next(1, 404)

    error = await deliver_failure(webhook_receiver.url)

    assert not error.retryable
    assert error.status == 404
    assert error.reason == "webhook receiver answered 404 Not Found"


async def test_webhook_redirect_is_not_followed(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.respond_next(2, 301, headers={"Location": "/moved?token=leaky-value"})

    error = await deliver_failure(webhook_receiver.url)
    assert not error.retryable
    assert error.status == 301
    assert error.reason == (
        f"webhook answered a redirect to {webhook_receiver.url_for('/moved')}; "
        "configure the final URL"
    )
    assert "leaky-value" not in error.reason

    # not even with a caller's client that follows redirects by default
    async with httpx.AsyncClient(follow_redirects=True) as client:
        await deliver_failure(webhook_receiver.url, client=client)
    assert [d.path for d in webhook_receiver.deliveries] == ["/hook", "/hook"]


async def test_webhook_unreachable_is_retryable() -> None:
    error = await deliver_failure(closed_port_url() + "hook")

    assert error.retryable
    assert "could not be reached" in error.reason


async def test_webhook_timeout_is_retryable(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.respond_next(1, 204, delay=1.5)

    error = await deliver_failure(webhook_receiver.url, timeout=0.3)

    assert error.retryable
    assert (
        error.reason
        == f"webhook receiver 127.0.0.1:{webhook_receiver.port} did not answer within 0.3s"
    )


async def test_slack_timeout_is_retryable() -> None:
    # any HTTP server that answers too late will do: a webhook receiver with a delay
    with WebhookReceiver(secret=None) as slow:
        slow.respond_next(1, 200, delay=1.5)
        error = await post_failure(SlackApiStandin(), base_url=slow.url_for("/api/"), timeout=0.3)

    assert error.retryable
    assert error.reason == "Slack could not be reached: timed out"


async def test_webhook_bad_url_is_permanent() -> None:
    for url in ("ftp://example.com/hook", "not a url", "http:///nohost"):
        error = await deliver_failure(url)
        assert not error.retryable


def test_sign_and_verify() -> None:
    body = b'{"a":1}'
    now = 1_700_000_000
    signature = webhook.sign(WEBHOOK_SECRET, now, body)
    expected = hmac.new(WEBHOOK_SECRET.encode(), b"1700000000." + body, hashlib.sha256)
    assert signature == "sha256=" + expected.hexdigest()
    # the receiver's independent implementation agrees
    assert signature_is_valid(WEBHOOK_SECRET, str(now), signature, body, now=now)

    assert webhook.verify(WEBHOOK_SECRET, str(now), signature, body, now=now + 10)
    assert webhook.verify(WEBHOOK_SECRET, str(now), signature, body, now=now + 300)
    assert not webhook.verify(WEBHOOK_SECRET, str(now), signature, b'{"a":2}', now=now)
    assert not webhook.verify("other-secret", str(now), signature, body, now=now)
    assert not webhook.verify(WEBHOOK_SECRET, str(now), signature, body, now=now + 301)
    assert not webhook.verify(WEBHOOK_SECRET, str(now), signature, body, now=now - 301)
    assert not webhook.verify(WEBHOOK_SECRET, str(now + 1), signature, body, now=now)
    assert not webhook.verify(WEBHOOK_SECRET, "soon", signature, body, now=now)
    assert not webhook.verify(WEBHOOK_SECRET, str(now), signature[7:], body, now=now)
    assert not webhook.verify(WEBHOOK_SECRET, str(now), "sha256=ü", body, now=now)
    assert webhook.verify(WEBHOOK_SECRET, str(now), signature, body, tolerance=60, now=now + 60)
    assert not webhook.verify(WEBHOOK_SECRET, str(now), signature, body, tolerance=60, now=now + 61)
    fresh = int(time.time())
    assert webhook.verify(
        WEBHOOK_SECRET, str(fresh), webhook.sign(WEBHOOK_SECRET, fresh, body), body
    )


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("-3") == 0
    assert retry_after_seconds("99999999") == 3600
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480) == 30
