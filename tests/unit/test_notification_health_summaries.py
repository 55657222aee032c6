"""What the Temporal UI shows of notifications and health monitors: summaries a person reads,
without a credential from a URL, and the status a notification request ends in."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from core.catalog.health_messages import (
    MonitorInput,
    MonitorLabels,
    ProbeConfig,
    monitor_summary,
    shown_endpoint,
)
from core.notifications.messages import (
    DeliveryOutcome,
    NotificationRequest,
    NotificationSummary,
    channel_label,
    summary,
)
from workflows.health_monitor import _duration


def test_a_notification_summary_names_channels_event_and_service() -> None:
    one = uuid.uuid4()
    request = NotificationRequest(
        event="pipeline.failed",
        context={"service": "shop", "environment": "production\nfake line"},
        channel_ids=[one, uuid.uuid4()],
        user_ids=[uuid.uuid4()],
    )
    assert summary(request) == (
        "notify 2 channels and 1 user of pipeline.failed for shop in production fake line"
    )
    labels = [channel_label("slack", "deploys"), channel_label("webhook", "ci")]
    assert summary(request, labels).startswith("notify deploys (slack), ci (webhook) and 1 user")
    bare = NotificationRequest(event="custom", context={"service": 42}, channel_ids=[one])
    assert summary(bare) == "notify 1 channel of custom"
    assert channel_label("email", "ops", personal=True) == "ops (email, personal)"


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["delivered", "skipped"], "delivered"),
        (["delivered", "failed", "skipped"], "failed"),
        (["skipped", "skipped"], "skipped"),
        ([], "skipped"),
    ],
)
def test_a_request_status_is_failed_if_any_delivery_failed(
    statuses: list[str], expected: str
) -> None:
    outcomes = [DeliveryOutcome(notification_id=uuid.uuid4(), status=s) for s in statuses]
    assert NotificationSummary(request_id=uuid.uuid4(), outcomes=outcomes).status() == expected


def test_a_monitor_summary_shows_no_credential_of_its_endpoint() -> None:
    endpoint = "https://probe:s3cret@shop.example.com:8443/healthz?token=abc#frag"
    assert shown_endpoint(endpoint) == "https://shop.example.com:8443/healthz"
    assert shown_endpoint("http://[::1]:8080/h") == "http://[::1]:8080/h"
    monitor = MonitorInput(check_id=uuid.uuid4(), config=ProbeConfig(endpoint=endpoint))
    assert monitor_summary(monitor) == "health monitor of https://shop.example.com:8443/healthz"
    labelled = monitor.model_copy(
        update={"labels": MonitorLabels(service="shop", check="readiness", team="payments")}
    )
    assert monitor_summary(labelled) == (
        "health monitor of shop (readiness: https://shop.example.com:8443/healthz)"
    )
    assert "s3cret" not in monitor_summary(labelled) and "abc" not in monitor_summary(labelled)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (12, "12s"), (250, "4m 10s"), (7200, "2h"), (7530, "2h 5m"), (90_000, "1d 1h")],
)
def test_how_long_a_health_status_has_held(seconds: int, shown: str) -> None:
    assert _duration(timedelta(seconds=seconds)) == shown
