"""AWS Signature Version 4 for the few AWS API calls the platform makes itself (Cost
Explorer), with botocore's signer (`botocore.auth.SigV4Auth`): the canonical request, the
string to sign, the key derivation and the Authorization header are botocore's, maintained
with the AWS SDK. This module only adapts it to plain (method, URL, headers, body) requests
sent with httpx, and lets a caller (a test, a verifying stand-in) choose the signing time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class _SigV4At(SigV4Auth):
    """botocore's signer at a given moment instead of the clock (its `add_auth` reads the
    clock itself); every step of the signature is still botocore's."""

    def __init__(self, credentials: Credentials, service: str, region: str, at: datetime):
        super().__init__(credentials, service, region)
        self._at = at

    def add_auth(self, request: AWSRequest) -> None:
        request.context["timestamp"] = self._at.strftime(SIGV4_TIMESTAMP)
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        signature = self.signature(self.string_to_sign(request, canonical), request)
        self._inject_signature_to_request(request, signature)


def _host(url: str) -> str:
    """The Host header an HTTP client sends for `url` (no default port)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{parts.port}"
    return host


def signed_headers(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: AwsCredentials,
    *,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date, X-Amz-Security-Token (with a session token) and the
    Authorization that signs them all, the path, the query and `body`."""
    keys = Credentials(
        credentials.access_key_id, credentials.secret_access_key, credentials.session_token
    )
    request = AWSRequest(
        method=method.upper(), url=url, headers={"Host": _host(url), **headers}, data=body
    )
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    _SigV4At(keys, service, region, moment).add_auth(request)
    return {str(name): str(value) for name, value in request.headers.items()}
