"""A webhook receiver that checks platform signatures the way docs/webhooks.md tells receivers
to, written independently of the sender (it does not import its `verify`).

    with WebhookReceiver(secret="whsec-test") as receiver:
        await post_webhook(url=receiver.url, secret="whsec-test", ..., egress=local_egress())
        assert receiver.deliveries[-1].signature_valid

By default a request whose signature does not check out is answered 401, as a real receiver
would; `respond_next(n, status, headers=...)` scripts the next answers (500, 429 + Retry-After,
404, a 302 with Location, ...). Every request is recorded, scripted or not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.standins import BackgroundHTTPServer, StandinRequestHandler

DEFAULT_SECRET = "whsec-standin-secret"
TOLERANCE = 300


@dataclass(frozen=True)
class ReceivedDelivery:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool | None  # None when the receiver has no secret
    status: int  # what the receiver answered
    time: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    @property
    def delivery_id(self) -> str | None:
        return self.header("X-IDP-Delivery")

    @property
    def event(self) -> str | None:
        return self.header("X-IDP-Event")

    def json(self) -> Any:
        return json.loads(self.body)


def signature_is_valid(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    tolerance: int = TOLERANCE,
    now: float | None = None,
) -> bool:
    """The documented check: "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + raw body)),
    with the timestamp (Unix seconds, the header verbatim) no further than `tolerance` from now."""
    if timestamp is None or signature is None or not timestamp.isascii():
        return False
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    signed = timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={digest}".encode(), signature.encode("utf-8", "replace"))


class WebhookReceiver(BackgroundHTTPServer):
    def __init__(
        self,
        *,
        secret: str | None = DEFAULT_SECRET,
        reject_invalid_signatures: bool = True,
        port: int | None = None,
    ) -> None:
        super().__init__(_ReceiverHandler, port=port)
        self.secret = secret
        self.reject_invalid_signatures = reject_invalid_signatures
        self._lock = threading.Lock()
        self._deliveries: list[ReceivedDelivery] = []
        self._script: list[tuple[int, dict[str, str], bytes, float]] = []

    @property
    def url(self) -> str:
        return self.url_for("/hook")

    def url_for(self, path: str) -> str:
        return f"{self.origin}{path}"

    @property
    def deliveries(self) -> list[ReceivedDelivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def accepted(self) -> list[ReceivedDelivery]:
        """Deliveries answered 2xx, once per X-IDP-Delivery (as a deduping receiver sees them)."""
        seen: set[str | None] = set()
        unique = []
        for delivery in self.deliveries:
            if 200 <= delivery.status < 300 and delivery.delivery_id not in seen:
                seen.add(delivery.delivery_id)
                unique.append(delivery)
        return unique

    def respond_next(
        self,
        n: int,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        delay: float = 0,
    ) -> None:
        """Answer the next `n` requests with `status` (and headers, e.g. Retry-After or
        Location), whatever their signature, after waiting `delay` seconds."""
        with self._lock:
            self._script += [(status, dict(headers or {}), body, delay)] * n

    def _take_scripted(self) -> tuple[int, dict[str, str], bytes, float] | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    def _record(self, delivery: ReceivedDelivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)


class _ReceiverHandler(StandinRequestHandler):
    def _receive(self) -> None:
        receiver: WebhookReceiver = self.server.owner
        body = self.read_body()
        headers = {name: value for name, value in self.headers.items()}
        valid: bool | None = None
        if receiver.secret is not None:
            valid = signature_is_valid(
                receiver.secret,
                self.headers.get("X-IDP-Timestamp"),
                self.headers.get("X-IDP-Signature"),
                body,
            )
        scripted = receiver._take_scripted()
        if scripted is not None:
            status, extra, answer, delay = scripted
            if delay:
                time.sleep(delay)
        elif self.command != "POST":
            status, extra, answer = 405, {"Allow": "POST"}, b"method not allowed"
        elif valid is False and receiver.reject_invalid_signatures:
            status, extra, answer = 401, {}, b"invalid signature"
        else:
            status, extra, answer = 204, {}, b""
        receiver._record(
            ReceivedDelivery(
                method=self.command,
                path=self.path,
                headers=headers,
                body=body,
                signature_valid=valid,
                status=status,
            )
        )
        self.answer(status, answer, headers=extra)

    do_POST = _receive
    do_PUT = _receive
    do_GET = _receive
