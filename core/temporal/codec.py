"""The payload codec that keeps workflow data out of Temporal's history in clear text.

Every payload (workflow and activity inputs and results, signal, query and update arguments,
memos, failure details) is serialized whole and encrypted with the key ring before it leaves
the process, so the Temporal server, its database and its UI only ever see ciphertext. Search
attributes and headers stay readable: the server must index the first, and the request-context
header carries no secrets. So do failure messages and stack traces, which are not payloads:
never put a secret in an exception message.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.security.encryption import KeyRing

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
# Binds ciphertexts to this use: a database column value pasted into a payload does not decrypt.
_AAD = b"idp-platform/temporal-payload"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the serialized payload; metadata names the encoding and key id (the
    convention Temporal's UI and codec servers know)."""

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring

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
        """Decrypt our payloads; pass others through, so histories written before encryption
        was turned on still read."""
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            decoded = Payload()
            decoded.ParseFromString(self.keyring.decrypt(p.data, aad=_AAD))
            out.append(decoded)
        return out
