"""The payload codec that keeps workflow data out of Temporal's history in clear text.

Every payload (workflow and activity inputs and results, signal, query and update arguments,
memos, failure details) is serialized whole and encrypted with the key ring before it leaves
the process, so the Temporal server, its database and its UI only ever see ciphertext. Search
attributes and headers stay readable: the server must index the first, and the request-context
header carries no secrets. So do failure messages and stack traces, which are not payloads:
never put a secret in an exception message.

In production the codec also refuses payloads that are not encrypted: AES-GCM makes a payload
that decrypts one that a holder of the key wrote, so someone who reaches the Temporal frontend
without the key cannot start workflows or send Updates and signals the workers act on. In a
worker or client, `decode` does not raise (a codec error fails the whole workflow task, which
the server retries: one plain Update would stall the workflow); it hands on a `REFUSED`
payload instead, which the data converter refuses to turn into a value
(`core.temporal.converter`), so that Update is rejected, a signal dropped, a plain workflow
input fails that workflow. The codec route raises (`decode_strict`). In development and tests
plain payloads are still accepted, so the Temporal CLI and UI can send them
(`temporal workflow update --input '{...}'`), and histories written before encryption was
turned on still read.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.security.encryption import DecryptionError, KeyRing

ENCODING = b"binary/encrypted"
REFUSED = b"binary/unencrypted-refused"  # stands in for a plain payload production refuses
KEY_ID = "encryption-key-id"
# Binds ciphertexts to this use: a database column value pasted into a payload does not decrypt.
_AAD = b"idp-platform/temporal-payload"


class PlaintextPayloadRefused(DecryptionError):
    code = "unencrypted_payload"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the serialized payload; metadata names the encoding and key id (the
    convention Temporal's UI and codec servers know). `allow_plaintext=False` (production)
    refuses payloads that are not encrypted."""

    def __init__(self, keyring: KeyRing, *, allow_plaintext: bool = True) -> None:
        self.keyring = keyring
        self.allow_plaintext = allow_plaintext

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        kid = self.keyring.current.kid.encode()
        return [
            Payload(
                metadata={"encoding": ENCODING, KEY_ID: kid},
                data=self.keyring.encrypt(p.SerializeToString(), aad=_AAD),
            )
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt our payloads. Others pass through when plaintext is allowed (development);
        in production each becomes a `REFUSED` payload naming why (never the sender's data)."""
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                if not self.allow_plaintext:
                    out.append(Payload(metadata={"encoding": REFUSED}, data=_refusal(p).encode()))
                    continue
                out.append(p)
                continue
            decoded = Payload()
            decoded.ParseFromString(self.keyring.decrypt(p.data, aad=_AAD))
            out.append(decoded)
        return out

    async def decode_strict(self, payloads: Sequence[Payload]) -> list[Payload]:
        """`decode`, raising `PlaintextPayloadRefused` where it would hand on `REFUSED` (the
        codec route: an HTTP caller gets the refusal as its answer)."""
        if not self.allow_plaintext:
            for p in payloads:
                if p.metadata.get("encoding") != ENCODING:
                    encoding = p.metadata.get("encoding", b"").decode("utf-8", "replace")
                    raise PlaintextPayloadRefused(_refusal(p), details={"encoding": encoding[:100]})
        return await self.decode(payloads)


def _refusal(payload: Payload) -> str:
    encoding = payload.metadata.get("encoding", b"").decode("utf-8", "replace")[:100]
    return (
        f"refused an unencrypted Temporal payload (encoding {encoding or 'none'}): in production "
        "every payload must be encrypted with the platform's key (docs/configuration.md, Temporal)"
    )
