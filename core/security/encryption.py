"""Encryption of secrets at rest and of Temporal payloads: AES-256-GCM under a key ring.

The ring holds the current key (ENCRYPTION_KEY), which encrypts everything new, and previous
keys (ENCRYPTION_KEYS_PREVIOUS), which only decrypt. Every ciphertext names its key by a short
key id (kid), so rotating keys never needs a flag day: add the old key to the previous list,
set the new one, re-encrypt at leisure, then drop the old key.

Binary format v1: `0x01 | kid (6 bytes) | nonce (12 bytes) | ciphertext and GCM tag`. The
version byte and kid are authenticated as associated data, so they cannot be swapped. The text
form for database columns is `enc:v1:<kid hex>:<base64url(nonce | ciphertext and tag)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from core.errors import AppError, ConfigError
from core.settings import Settings

MIN_KEY_CHARS = 32
VERSION = 1
TEXT_PREFIX = "enc:v1:"
_KID_BYTES = 6
_NONCE_BYTES = 12
_HEADER_BYTES = 1 + _KID_BYTES
# Fixed HKDF inputs: they name the purpose, so the same ENCRYPTION_KEY reused elsewhere (by
# mistake) would still yield an unrelated AES key.
_HKDF_SALT = b"idp-platform/encryption/v1"
_HKDF_INFO = b"AES-256-GCM key for secrets at rest and Temporal payloads"
_KID_LABEL = b"idp-platform/key-id/v1\x00"


class DecryptionError(AppError):
    """Data cannot be decrypted: unknown key id, tampering, or not our format. The message
    names the key id, never key material."""

    code = "decryption_failed"


@dataclass(frozen=True)
class Key:
    """One derived AES-256 key and its id. The id is a truncated hash of the derived key: it
    tells keys apart without revealing anything about them."""

    kid: str
    aead: AESGCM = field(repr=False, compare=False)

    @classmethod
    def derive(cls, material: str, *, name: str = "encryption key") -> Key:
        """HKDF-SHA256 over key material of 32+ characters (any text, e.g. 64 hex chars)."""
        if len(material) < MIN_KEY_CHARS:
            raise ConfigError(
                f"{name} is too short: use {MIN_KEY_CHARS}+ random characters "
                "(generate one with: openssl rand -hex 32)"
            )
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(
            material.encode()
        )
        kid = hashlib.sha256(_KID_LABEL + raw).digest()[:_KID_BYTES].hex()
        return cls(kid, AESGCM(raw))


class KeyRing:
    """The current key (encrypts and decrypts) and previous keys (decrypt only)."""

    def __init__(self, current: Key, previous: Iterable[Key] = ()) -> None:
        self.current = current
        self._keys: dict[str, Key] = {current.kid: current}
        for key in previous:
            self._keys.setdefault(key.kid, key)  # the current key listed again is harmless

    @classmethod
    def from_material(cls, current: str, previous: Iterable[str] = ()) -> KeyRing:
        return cls(Key.derive(current), [Key.derive(m) for m in previous])

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """ENCRYPTION_KEY as the current key, ENCRYPTION_KEYS_PREVIOUS (comma-separated)."""
        if settings.encryption_key is None or not settings.encryption_key.get_secret_value():
            raise ConfigError("ENCRYPTION_KEY is not set (generate one with: openssl rand -hex 32)")
        current = Key.derive(settings.encryption_key.get_secret_value(), name="ENCRYPTION_KEY")
        previous = []
        if settings.encryption_keys_previous is not None:
            items = settings.encryption_keys_previous.get_secret_value().split(",")
            for n, material in enumerate((m.strip() for m in items if m.strip()), start=1):
                previous.append(Key.derive(material, name=f"ENCRYPTION_KEYS_PREVIOUS entry {n}"))
        return cls(current, previous)

    @property
    def kids(self) -> list[str]:
        """Key ids, the current one first."""
        return list(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current.kid!r}, kids={self.kids!r})"

    # Binary ------------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, *, aad: bytes = b"") -> bytes:
        """Encrypt with the current key and a fresh random nonce (so equal inputs differ)."""
        header = bytes([VERSION]) + bytes.fromhex(self.current.kid)
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + self.current.aead.encrypt(nonce, plaintext, header + aad)

    def decrypt(self, blob: bytes, *, aad: bytes = b"") -> bytes:
        """Decrypt with whichever key of the ring the blob names; `aad` must match encrypt's."""
        if len(blob) < _HEADER_BYTES + _NONCE_BYTES + 16:
            raise DecryptionError("cannot decrypt: data is too short to be an encrypted value")
        if blob[0] != VERSION:
            raise DecryptionError(f"cannot decrypt: unknown format version {blob[0]}")
        header, nonce = blob[:_HEADER_BYTES], blob[_HEADER_BYTES : _HEADER_BYTES + _NONCE_BYTES]
        kid = header[1:].hex()
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(
                f"cannot decrypt: key id {kid} is not in the key ring (known: "
                f"{', '.join(self.kids)}); put the key that encrypted it in "
                "ENCRYPTION_KEYS_PREVIOUS",
                details={"kid": kid},
            )
        try:
            return key.aead.decrypt(nonce, blob[_HEADER_BYTES + _NONCE_BYTES :], header + aad)
        except InvalidTag:
            raise DecryptionError(
                f"cannot decrypt data under key id {kid}: authentication failed (tampered, "
                "truncated, or bound to other associated data)",
                details={"kid": kid},
            ) from None

    # Text --------------------------------------------------------------------------------
    def encrypt_str(self, plaintext: str, *, aad: bytes = b"") -> str:
        """`enc:v1:<kid>:<base64url>`, for text columns and configuration values."""
        blob = self.encrypt(plaintext.encode(), aad=aad)
        body = base64.urlsafe_b64encode(blob[_HEADER_BYTES:]).rstrip(b"=").decode()
        return f"{TEXT_PREFIX}{self.current.kid}:{body}"

    def decrypt_str(self, token: str, *, aad: bytes = b"") -> str:
        if not token.startswith(TEXT_PREFIX):
            raise DecryptionError(
                f"cannot decrypt: not an encrypted value (expected {TEXT_PREFIX})"
            )
        kid, sep, body = token[len(TEXT_PREFIX) :].partition(":")
        try:
            if not sep or len(kid) != 2 * _KID_BYTES:
                raise ValueError
            header = bytes([VERSION]) + bytes.fromhex(kid)
            rest = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (ValueError, binascii.Error):
            raise DecryptionError(
                f"cannot decrypt: malformed encrypted value (expected {TEXT_PREFIX}<kid>:<data>)"
            ) from None
        try:
            return self.decrypt(header + rest, aad=aad).decode()
        except UnicodeDecodeError:  # authenticated, so only a caller mixing APIs gets here
            raise DecryptionError(f"decrypted data under key id {kid} is not UTF-8") from None


def row_aad(purpose: str, row_id: object) -> bytes:
    """Associated data binding a ciphertext to one column (`purpose`) of one row (`row_id`):
    a value copied into another row, or another column, no longer decrypts."""
    return f"{purpose}:{row_id}".encode()


# -- the process-wide ring for column types -----------------------------------------------------
# SQLAlchemy column types are built when model modules are imported, long before settings are
# loaded, and every session of the process shares them: they cannot receive a ring through a
# constructor or a session. So the edge (API app factory, worker start-up) installs one ring per
# process, and `EncryptedText` looks it up on each bind and each result.
_installed: KeyRing | None = None


def install_keyring(keyring: KeyRing | None) -> KeyRing | None:
    """Install the ring `EncryptedText` columns use; returns the one it replaces."""
    global _installed
    previous, _installed = _installed, keyring
    return previous


def installed_keyring() -> KeyRing:
    if _installed is None:
        raise RuntimeError(
            "no encryption key ring installed: call core.security.encryption.install_keyring("
            "KeyRing.from_settings(settings)) at process start-up before using EncryptedText"
        )
    return _installed


class EncryptedText(TypeDecorator[str]):
    """A text column stored as `enc:v1:...`. `purpose` is authenticated with each value, so a
    ciphertext copied into a column of another purpose does not decrypt."""

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.purpose = purpose

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return installed_keyring().encrypt_str(value, aad=self.purpose.encode())

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return installed_keyring().decrypt_str(value, aad=self.purpose.encode())
