"""Pipeline secrets: named values a pipeline's steps get as environment variables, and the
masking that keeps them out of the run's log.

- Stored encrypted with the key ring (AES-256-GCM), the associated data bound to the row's
  id, pipeline and name, so a ciphertext copied into another row does not decrypt.
- Written through the API (value write-only), listed by name, deleted; each change audited
  with the name only. Decrypted only by the step activity (`step_secrets`), never carried in
  a workflow's input, result or history.
- `LogMasker` replaces every value (and each line of a multi-line value) of 4+ characters by
  `***` in the step's log lines before they are stored or streamed. Shorter values are not
  masked: they would blot out ordinary output and hide nothing.

A fork's pull request (and a re-run of one) gets none of them (`core.pipelines.runs`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService
from core.errors import NotFound, ValidationFailed
from core.models.pipelines import Pipeline, PipelineSecret
from core.pipelines.runners.lines import DEFAULT_MAX_LINE_BYTES
from core.security.encryption import installed_keyring

MASK = "***"
MIN_MASKED_CHARS = 4  # shorter values are given to steps but not masked in logs
MAX_VALUE_CHARS = 64 * 1024
MAX_SECRETS = 100  # per pipeline
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
RESERVED_PREFIX = "IDP_"
RESERVED_NAMES = frozenset({"CI"})
# A line cut by the runners' splitter is this long or longer in UTF-8 (the cut backs off over
# at most 3 bytes of a character): its next piece continues it, so a value across the cut is
# looked for in both.
CUT_LINE_BYTES = DEFAULT_MAX_LINE_BYTES - 3


def _aad(secret_id: uuid.UUID, pipeline_id: uuid.UUID, name: str) -> bytes:
    return f"pipeline-secret:{secret_id}:{pipeline_id}:{name}".encode()


def check_name(name: str) -> str:
    """An environment variable name the platform does not set itself."""
    if not _NAME.match(name):
        raise ValidationFailed.on(
            "name",
            f"{name[:80]!r} is not a secret name: letters, digits and _, not starting with a "
            "digit, at most 255 characters",
        )
    if name.upper().startswith(RESERVED_PREFIX) or name.upper() in RESERVED_NAMES:
        raise ValidationFailed.on(
            "name", f"{name} is reserved: the platform sets CI and the IDP_* variables"
        )
    return name


def check_value(value: str) -> str:
    if not value:
        raise ValidationFailed.on("value", "a secret's value cannot be empty")
    if len(value) > MAX_VALUE_CHARS:
        raise ValidationFailed.on("value", f"at most {MAX_VALUE_CHARS} characters")
    if "\x00" in value:
        raise ValidationFailed.on("value", "a secret's value cannot contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed.on("value", "a secret's value must be valid Unicode text") from None
    return value


@dataclass(frozen=True)
class SecretChange:
    secret: PipelineSecret
    created: bool


class PipelineSecretService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def list(self, pipeline: Pipeline) -> list[PipelineSecret]:
        return list(
            await self.session.scalars(
                select(PipelineSecret)
                .where(PipelineSecret.pipeline_id == pipeline.id)
                .order_by(PipelineSecret.name)
            )
        )

    async def _find(self, pipeline: Pipeline, name: str) -> PipelineSecret | None:
        return await self.session.scalar(
            select(PipelineSecret).where(
                PipelineSecret.pipeline_id == pipeline.id, PipelineSecret.name == name
            )
        )

    async def set(self, pipeline: Pipeline, name: str, value: str) -> SecretChange:
        """Create or replace the secret `name`; audited by name, never by value."""
        check_name(name)
        check_value(value)
        row = await self._find(pipeline, name)
        created = row is None
        if row is None:
            if len(await self.list(pipeline)) >= MAX_SECRETS:
                raise ValidationFailed.on("name", f"a pipeline has at most {MAX_SECRETS} secrets")
            row = PipelineSecret(id=uuid.uuid4(), pipeline_id=pipeline.id, name=name)
        row.value = installed_keyring().encrypt_str(value, aad=_aad(row.id, pipeline.id, name))
        self.session.add(row)
        await self.session.flush()
        await self.audit.record(
            "pipeline_secret.create" if created else "pipeline_secret.update",
            "pipeline_secret",
            row.id,
            after={"pipeline_id": pipeline.id, "name": name},
        )
        return SecretChange(row, created)

    async def delete(self, pipeline: Pipeline, name: str) -> None:
        row = await self._find(pipeline, name)
        if row is None:
            raise NotFound(f"pipeline {pipeline.name} has no secret named {name[:80]!r}")
        await self.session.delete(row)
        await self.audit.record(
            "pipeline_secret.delete",
            "pipeline_secret",
            row.id,
            before={"pipeline_id": pipeline.id, "name": name},
        )


def reveal(secret: PipelineSecret) -> str:
    """The plain value: only for the step activity that hands it to a step."""
    return installed_keyring().decrypt_str(
        secret.value, aad=_aad(secret.id, secret.pipeline_id, secret.name)
    )


async def step_secrets(session: AsyncSession, pipeline_id: uuid.UUID) -> dict[str, str]:
    """The pipeline's secrets by name, decrypted (for the step activity alone)."""
    rows = await session.scalars(
        select(PipelineSecret).where(PipelineSecret.pipeline_id == pipeline_id)
    )
    return {row.name: reveal(row) for row in rows}


class LogMasker:
    """Replaces secret values by `***` in a step's log lines, as they stream.

    Each line is masked on its own; a multi-line value is masked line by line (each of its
    lines of 4+ characters), so batch boundaries between lines do not matter. A line the
    runner cut because it was too long is held back until its next piece arrives, and the
    pieces are masked together, so a value across the cut is masked as well. `flush()`
    returns what is held at the step's end."""

    def __init__(self, values: Iterable[str]) -> None:
        needles: set[str] = set()
        for value in values:
            for part in (value, *value.splitlines()):
                part = part.strip("\r")
                if len(part) >= MIN_MASKED_CHARS:
                    needles.add(part)
        self._needles = sorted(needles, key=len, reverse=True)
        self._held: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self._needles)

    def text(self, text: str) -> str:
        """One piece of text masked (an error message, a platform line)."""
        return self._pieces([text])[0]

    def feed(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The lines ready to store, masked; a trailing cut piece waits for the next."""
        out: list[dict[str, Any]] = []
        for line in lines:
            if self._held and line.get("stream") != self._held[-1].get("stream"):
                out.extend(self.flush())  # the other stream came between: no continuation
            self._held.append(line)
            if len(str(line.get("text", "")).encode("utf-8")) < CUT_LINE_BYTES:
                out.extend(self.flush())
        return out

    def flush(self) -> list[dict[str, Any]]:
        held, self._held = self._held, []
        if not held:
            return []
        texts = self._pieces([str(line.get("text", "")) for line in held])
        return [{**line, "text": text} for line, text in zip(held, texts, strict=True)]

    def _pieces(self, texts: list[str]) -> list[str]:
        """`texts` (consecutive pieces of one line) with every value found in their join
        replaced: the piece where a value starts shows `***`, the rest of it is dropped."""
        joined = "".join(texts)
        if not any(needle in joined for needle in self._needles):
            return texts
        covered = bytearray(len(joined))
        for needle in self._needles:
            start = joined.find(needle)
            while start != -1:
                covered[start : start + len(needle)] = b"\x01" * len(needle)
                start = joined.find(needle, start + 1)
        out: list[str] = []
        pos = 0
        for text in texts:
            parts: list[str] = []
            for i, char in enumerate(text, start=pos):
                if not covered[i]:
                    parts.append(char)
                elif i == 0 or not covered[i - 1]:
                    parts.append(MASK)
            out.append("".join(parts))
            pos += len(text)
        return out
