"""The data converter shared by clients and workers: pydantic-aware JSON payloads.

Workflow and activity inputs may be dataclasses or pydantic models (datetimes, UUIDs and
enums round-trip). A payload codec (encryption) plugs in here without touching callers.
A payload the production codec refused (`core.temporal.codec.REFUSED`) converts to no value:
it raises a non-retryable `ApplicationError` (type `Forbidden`), which rejects the Update or
fails the workflow it was meant for, with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import DataConverter, EncodingPayloadConverter, PayloadCodec
from temporalio.exceptions import ApplicationError

from core.temporal.codec import REFUSED


class _RefusedPayloadConverter(EncodingPayloadConverter):
    @property
    def encoding(self) -> str:
        return REFUSED.decode()

    def to_payload(self, value: Any) -> Payload | None:
        return None  # never chosen to encode

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        raise ApplicationError(
            payload.data.decode("utf-8", "replace")[:500], type="Forbidden", non_retryable=True
        )


class PlatformPayloadConverter(PydanticPayloadConverter):
    def __init__(self) -> None:
        super().__init__()
        self._set_converters(*self.converters.values(), _RefusedPayloadConverter())


def data_converter(codec: PayloadCodec | None = None) -> DataConverter:
    return dataclasses.replace(
        pydantic_data_converter,
        payload_converter_class=PlatformPayloadConverter,
        payload_codec=codec,
    )
