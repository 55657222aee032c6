"""A stand-in for AWS Cost Explorer's `GetCostAndUsage`, speaking its wire format (the JSON
1.1 protocol: `POST /` with `X-Amz-Target: AWSInsightsIndexService.GetCostAndUsage`), and
checking each request is SigV4-signed by a key it knows, for the `ce` service in us-east-1.

    with CostExplorerStandin(keys={"AKIDEXAMPLE": "secret"}) as ce:
        ce.charge(date(2026, 5, 1), {"service": "shop", "environment": "prod"}, "12.34")
        ...  # point a provider's cost_explorer_url at ce.url
        ce.requests[-1].body["GroupBy"]

Charged line items are summed per value of the requested tag keys, answered as Cost Explorer
does: `Keys` like `service$shop` (`service$` for untagged cost), amounts as strings, pages of
`page_size` groups linked by `NextPageToken`. Refusals answer HTTP 400 with
`{"__type": "<code>", "message": ...}` (`UnrecognizedClientException` for an unknown key,
`InvalidSignatureException` when the signature does not match the request it came with).

The signature is recomputed from the request as received with the platform's own signer,
whose algorithm a unit test checks against AWS's published examples.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.infrastructure.collectors.sigv4 import AwsCredentials, signed_headers
from tests.standins import BackgroundHTTPServer, StandinRequestHandler

TARGET = "AWSInsightsIndexService.GetCostAndUsage"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class CostExplorerRequest:
    access_key_id: str | None
    headers: dict[str, str]
    body: Any
    status: int
    error: str | None


class _Refused(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class CostExplorerStandin(BackgroundHTTPServer):
    def __init__(
        self, *, keys: dict[str, str], page_size: int = 100, port: int | None = None
    ) -> None:
        super().__init__(_CostExplorerHandler, port=port)
        self.keys = dict(keys)  # access key id -> secret access key
        self.page_size = page_size
        self._lock = threading.Lock()
        self._items: dict[date, list[tuple[dict[str, str], Decimal]]] = defaultdict(list)
        self._requests: list[CostExplorerRequest] = []
        self._failures: list[tuple[int, str]] = []

    @property
    def url(self) -> str:
        """What to give as `cost_explorer_url`."""
        return f"{self.origin}/"

    @property
    def requests(self) -> list[CostExplorerRequest]:
        with self._lock:
            return list(self._requests)

    def charge(self, day: date, tags: dict[str, str], amount: str) -> None:
        """A line item of `day` costing `amount` USD, carrying `tags`."""
        with self._lock:
            self._items[day].append((dict(tags), Decimal(amount)))

    def fail_next(self, n: int, status: int = 400, code: str = "ThrottlingException") -> None:
        """Refuse the next `n` requests with `code` (e.g. throttling)."""
        with self._lock:
            self._failures += [(status, code)] * n

    # -- request handling (the server's threads) -------------------------------------------
    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        auth = _AUTH.match(headers.get("authorization", ""))
        key, body = (auth["key"] if auth else None), None
        try:
            self._verify(path, headers, raw)
            with self._lock:
                failure = self._failures.pop(0) if self._failures else None
            if failure:
                raise _Refused(failure[1], "Rate exceeded", failure[0])
            body = json.loads(raw)
            status, answer = 200, self._answer(body)
            error = None
        except _Refused as refusal:
            status, error = refusal.status, refusal.code
            answer = {"__type": refusal.code, "message": str(refusal)}
        except (ValueError, KeyError, TypeError) as exc:
            status, error = 400, "SerializationException"
            answer = {"__type": error, "message": f"malformed request: {exc}"}
        with self._lock:
            self._requests.append(CostExplorerRequest(key, headers, body, status, error))
        return status, answer

    def _verify(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        if headers.get("x-amz-target") != TARGET:
            raise _Refused("UnknownOperationException", f"{headers.get('x-amz-target')!r}")
        if headers.get("content-type") != "application/x-amz-json-1.1":
            raise _Refused("SerializationException", "expected application/x-amz-json-1.1")
        auth = _AUTH.match(headers.get("authorization", ""))
        if auth is None:
            raise _Refused("MissingAuthenticationTokenException", "Missing Authentication Token")
        key = auth["key"]
        if key not in self.keys:
            raise _Refused(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        amz_date = headers.get("x-amz-date", "")
        if (auth["region"], auth["service"]) != ("us-east-1", "ce") or not amz_date.startswith(
            auth["date"]
        ):
            raise _Refused("InvalidSignatureException", "Credential should be scoped correctly")
        signed = auth["signed"].split(";")
        if not {"host", "x-amz-date", "x-amz-target"} <= set(signed):
            raise _Refused("InvalidSignatureException", "host, x-amz-date, x-amz-target unsigned")
        expected = signed_headers(
            "POST",
            f"http://{headers['host']}{path}",
            {n: headers[n] for n in signed if n not in ("host", "x-amz-date")},
            raw,
            AwsCredentials(key, self.keys[key]),
            region="us-east-1",
            service="ce",
            now=datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
        )
        if expected["Authorization"] != headers["authorization"]:
            raise _Refused(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        period = body["TimePeriod"]
        start, end = (date.fromisoformat(period[k]) for k in ("Start", "End"))
        groups = body.get("GroupBy") or []
        if (
            body.get("Granularity") != "DAILY"
            or "UnblendedCost" not in body.get("Metrics", [])
            or not 1 <= len(groups) <= 2
            or any(g.get("Type") != "TAG" for g in groups)
            or end <= start
        ):
            raise _Refused(
                "ValidationException", "this stand-in answers DAILY UnblendedCost by tags"
            )
        tags = [g["Key"] for g in groups]
        results = []
        for offset in range((end - start).days):
            day = start + timedelta(days=offset)
            sums: dict[tuple[str, ...], Decimal] = defaultdict(Decimal)
            with self._lock:
                items = list(self._items.get(day, []))
            for item_tags, amount in items:
                sums[tuple(item_tags.get(t, "") for t in tags)] += amount
            results.append((day, sorted(sums.items())))
        flat = [(day, values, amount) for day, found in results for values, amount in found]
        first = int(body.get("NextPageToken") or 0)
        page = flat[first : first + self.page_size]
        by_time = [
            {
                "TimePeriod": {"Start": str(day), "End": str(day + timedelta(days=1))},
                "Total": {},
                "Groups": [
                    {
                        "Keys": [f"{t}${v}" for t, v in zip(tags, values, strict=True)],
                        "Metrics": {"UnblendedCost": {"Amount": str(amount), "Unit": "USD"}},
                    }
                    for d, values, amount in page
                    if d == day
                ],
                "Estimated": True,
            }
            for day, _ in results
        ]
        answer: dict[str, Any] = {
            "GroupDefinitions": groups,
            "ResultsByTime": by_time,
            "DimensionValueAttributes": [],
        }
        if first + self.page_size < len(flat):
            answer["NextPageToken"] = str(first + self.page_size)
        return answer


class _CostExplorerHandler(StandinRequestHandler):
    def do_POST(self) -> None:
        owner: CostExplorerStandin = self.server.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer = owner._handle(self.path, headers, self.read_body())
        self.answer(status, json.dumps(answer).encode(), content_type="application/x-amz-json-1.1")
