"""The codec endpoints the Temporal UI calls to show encrypted payloads to an operator.

Configure the UI's "Codec Server" with `<API>/api/temporal/codec` and have it pass the
operator's access token; decoding needs `workflows:decode` (admins). The wire format is the
Temporal codec server protocol: `{"payloads": [Payload as protobuf JSON]}` in and out.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload, Payloads

from api.auth import require
from core.errors import BadRequest
from core.security.authorization import Principal
from core.security.encryption import DecryptionError, installed_keyring
from core.temporal.codec import EncryptionCodec

router = APIRouter(prefix="/api/temporal/codec", tags=["temporal"])


class PayloadsBody(BaseModel):
    payloads: list[dict[str, Any]]


def _codec() -> EncryptionCodec:
    # The ring create_app installed at start-up: no key derivation per request.
    return EncryptionCodec(installed_keyring())


def _parse(body: PayloadsBody) -> list[Payload]:
    try:
        return list(ParseDict({"payloads": body.payloads}, Payloads()).payloads)
    except ParseError as exc:
        raise BadRequest(f"payloads are not Temporal Payload JSON: {exc}") from None


def _render(payloads: list[Payload]) -> PayloadsBody:
    return PayloadsBody(payloads=[MessageToDict(p) for p in payloads])


@router.post("/decode", response_model=PayloadsBody, summary="Decrypt payloads for the Temporal UI")
async def decode(body: PayloadsBody, _: Principal = require("workflows:decode")) -> PayloadsBody:
    try:
        return _render(await _codec().decode(_parse(body)))
    except DecryptionError as exc:
        raise BadRequest(exc.message, details=exc.details) from None


@router.post("/encode", response_model=PayloadsBody, summary="Encrypt payloads (Temporal UI)")
async def encode(body: PayloadsBody, _: Principal = require("workflows:decode")) -> PayloadsBody:
    return _render(await _codec().encode(_parse(body)))
