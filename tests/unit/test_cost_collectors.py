"""The cost collectors' pure parts: the registry agrees with SOURCES, `spread` sums to the
amount it splits, SigV4 signs as AWS's published examples do, namespaces are named as
recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.infrastructure.collectors import COLLECTORS
from core.infrastructure.collectors.aws import cost_tags
from core.infrastructure.collectors.base import CollectorError, money, spread
from core.infrastructure.collectors.opencost import namespace_of
from core.infrastructure.collectors.sigv4 import AwsCredentials, signed_headers
from core.infrastructure.cost_messages import SOURCES
from core.models.infrastructure import Provider, Resource


def test_sources_are_the_registered_collectors() -> None:
    assert tuple(COLLECTORS) == SOURCES


def test_spread_is_proportional_and_sums_to_the_amount() -> None:
    shares = spread(Decimal("7.7777"), {"db": Decimal("11.68"), "bucket": Decimal("2.30")})
    # 6.49816... and 1.27959... round to 6.4982 + 1.2796 = 7.7778: the largest gives back 0.0001
    assert shares == {"db": Decimal("6.4981"), "bucket": Decimal("1.2796")}
    thirds = spread(Decimal("1"), dict.fromkeys("abc", Decimal(0)))  # none priced: equally
    assert thirds == {"a": Decimal("0.3334"), "b": Decimal("0.3333"), "c": Decimal("0.3333")}
    some = spread(Decimal("-2.5"), {"x": Decimal(0), "y": Decimal(3), "z": Decimal(1)})
    assert some == {"y": Decimal("-1.8750"), "z": Decimal("-0.6250")}  # a credit; x unpriced
    assert spread(Decimal(5), {}) == {}
    for total in ("0.0001", "10", "123.4567", "0.9999"):
        parts = spread(Decimal(total), {i: Decimal(i % 4) for i in range(7)})
        assert sum(parts.values()) == Decimal(total)


def test_money_is_to_the_cent_and_refuses_what_is_not_an_amount() -> None:
    assert money(1.23456) == Decimal("1.2346") and money("2") == Decimal("2.0000")
    for bad in ("abc", "NaN", "Infinity"):
        with pytest.raises(CollectorError):
            money(bad)


def test_sigv4_matches_aws_published_examples() -> None:
    # AWS S3 docs, "Example: GET Object" (signature calculation with a header-based auth).
    s3 = signed_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {
            "Range": "bytes=0-9",
            "x-amz-content-sha256": (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
        },
        b"",
        AwsCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region="us-east-1",
        service="s3",
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert s3["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    # The SigV4 test suite's get-vanilla.
    vanilla = signed_headers(
        "GET",
        "https://example.amazonaws.com/",
        {},
        b"",
        AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        region="us-east-1",
        service="service",
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    assert vanilla["Authorization"].endswith(
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )
    assert (vanilla["Host"], vanilla["X-Amz-Date"]) == ("example.amazonaws.com", "20150830T123600Z")


def test_sigv4_signs_a_session_token_and_a_non_default_port() -> None:
    headers = signed_headers(
        "POST",
        "http://127.0.0.1:8123/",
        {"X-Amz-Target": "T"},
        b"{}",
        AwsCredentials("AK", "SK", session_token="token"),
        region="us-east-1",
        service="ce",
    )
    assert headers["Host"] == "127.0.0.1:8123" and headers["X-Amz-Security-Token"] == "token"
    assert (
        "SignedHeaders=host;x-amz-date;x-amz-security-token;x-amz-target,"
        in (headers["Authorization"])
    )


def test_a_namespace_is_named_by_its_metadata_then_its_id_then_its_name() -> None:
    def ns(**fields: object) -> Resource:
        base: dict[str, object] = {"identifier": "urn:pulumi:s::p::ns", "name": "shop-ns"}
        return Resource(type="kubernetes:core/v1:Namespace", **(base | fields))

    assert namespace_of(ns(properties={"metadata": {"name": "shop"}})) == "shop"
    assert namespace_of(ns(identifier="shop")) == "shop"
    assert namespace_of(ns(properties={})) == "shop-ns"


def test_cost_tags_are_one_or_two_keys() -> None:
    def account(config: dict[str, object]) -> Provider:
        return Provider(id=uuid.uuid4(), name="a", type="aws", config=config)

    assert cost_tags(account({})) == ("service", "environment")
    assert cost_tags(account({"cost_tags": ["team"]})) == ("team",)
    for bad in ([], ["a", "b", "c"], "team", [""]):
        with pytest.raises(CollectorError, match="cost_tags"):
            cost_tags(account({"cost_tags": bad}))
