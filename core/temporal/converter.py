"""The data converter shared by clients and workers: pydantic-aware JSON payloads.

Workflow and activity inputs may be dataclasses or pydantic models (datetimes, UUIDs and
enums round-trip). A payload codec (encryption) plugs in here without touching callers.
"""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec


def data_converter(codec: PayloadCodec | None = None) -> DataConverter:
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)
