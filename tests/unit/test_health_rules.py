"""The rules a health monitor applies: status from consecutive failures, a service's overall
status, which changes are notified, and the configuration checks shared by the API and the
workflow's `reconfigure` validator."""

from __future__ import annotations

import pytest

from core.catalog.health import (
    check_config,
    derive_status,
    should_notify,
    worst_status,
)
from core.catalog.health_messages import ProbeConfig
from core.errors import ValidationFailed


@pytest.mark.parametrize(
    ("failures", "threshold", "expected"),
    [
        (0, 3, "healthy"),
        (1, 3, "degraded"),
        (2, 3, "degraded"),
        (3, 3, "unhealthy"),
        (40, 3, "unhealthy"),
        (0, 1, "healthy"),
        (1, 1, "unhealthy"),  # a threshold of 1 has no degraded stage
        (99, 100, "degraded"),
    ],
)
def test_status_from_consecutive_failures(failures: int, threshold: int, expected: str) -> None:
    assert derive_status(failures, threshold) == expected


def test_status_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        derive_status(-1, 3)
    with pytest.raises(ValueError):
        derive_status(0, 0)


def test_service_status_is_the_worst_enabled_check() -> None:
    assert worst_status([]) == "unknown"
    assert worst_status(["healthy", "healthy"]) == "healthy"
    assert worst_status(["healthy", "unknown"]) == "unknown"
    assert worst_status(["healthy", "degraded", "unknown"]) == "degraded"
    assert worst_status(["degraded", "unhealthy", "healthy"]) == "unhealthy"
    assert worst_status(["paused"]) == "unknown"  # a paused check says nothing


@pytest.mark.parametrize(
    ("previous", "status", "notified"),
    [
        ("unknown", "healthy", False),  # the first result of a new check
        ("unknown", "degraded", True),
        ("unknown", "unhealthy", True),
        ("healthy", "degraded", True),
        ("degraded", "unhealthy", True),
        ("unhealthy", "healthy", True),
        ("degraded", "healthy", True),
        ("healthy", "healthy", False),
        ("healthy", "paused", False),  # a person disabled it
        ("paused", "unknown", False),
        ("paused", "healthy", False),
    ],
)
def test_which_changes_are_notified(previous: str, status: str, notified: bool) -> None:
    assert should_notify(previous, status) is notified


GOOD = ProbeConfig(endpoint="https://api.example.com/healthz", method="get")


def test_a_good_configuration_is_normalised() -> None:
    assert check_config(GOOD).method == "GET"
    assert check_config(GOOD.model_copy(update={"interval_seconds": 5, "timeout_seconds": 4.9}))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"endpoint": "ftp://example.com/x"}, "endpoint"),
        ({"endpoint": "example.com/healthz"}, "endpoint"),
        ({"endpoint": "https:///nohost"}, "endpoint"),
        ({"endpoint": "https://example.com/a b"}, "endpoint"),
        ({"endpoint": "http://example.com:99999/"}, "endpoint"),
        ({"method": "DELETE"}, "method"),
        ({"expected_status": 99}, "expected_status"),
        ({"expected_status": 600}, "expected_status"),
        ({"interval_seconds": 4, "timeout_seconds": 1}, "interval_seconds"),
        ({"interval_seconds": 86_401, "timeout_seconds": 5}, "interval_seconds"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 30}, "timeout_seconds"),  # not less than the interval (30)
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": 101}, "failure_threshold"),
    ],
)
def test_bad_configurations_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_config(GOOD.model_copy(update=changes))
    assert [d["field"] for d in caught.value.details] == [field]


def test_every_problem_is_reported_at_once_and_the_minimum_interval_is_a_parameter() -> None:
    bad = GOOD.model_copy(update={"method": "TRACE", "failure_threshold": 0})
    with pytest.raises(ValidationFailed) as caught:
        check_config(bad)
    assert {d["field"] for d in caught.value.details} == {"method", "failure_threshold"}
    fast = GOOD.model_copy(update={"interval_seconds": 0.5, "timeout_seconds": 0.4})
    with pytest.raises(ValidationFailed):
        check_config(fast)
    assert check_config(fast, min_interval=0.1).interval_seconds == 0.5
