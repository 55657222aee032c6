"""Encryption at rest: the key ring, its binary and text formats, rotation, tampering, the
EncryptedText column type on a real SQLite file, and how settings build the ring."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core.errors import AppError, ConfigError
from core.security.encryption import (
    DecryptionError,
    EncryptedText,
    KeyRing,
    install_keyring,
    installed_keyring,
)
from core.settings import MASK, Settings
from core.temporal.client import connect_options
from core.topology import Topology

OLD = "0123456789abcdef" * 4  # 64 hex characters, like `openssl rand -hex 32`
NEW = "fedcba9876543210" * 4
OTHER = "another key: any text of 32 or more characters"


def test_round_trip_binary_and_text() -> None:
    ring = KeyRing.from_material(NEW)
    blob = ring.encrypt(b"\x00binary\xff", aad=b"ctx")
    assert ring.decrypt(blob, aad=b"ctx") == b"\x00binary\xff"
    assert blob[0] == 1 and blob[1:7].hex() == ring.current.kid

    token = ring.encrypt_str("hunter2 ✓")
    assert token.startswith(f"enc:v1:{ring.current.kid}:")
    assert "hunter2" not in token
    assert ring.decrypt_str(token) == "hunter2 ✓"
    assert ring.decrypt_str(ring.encrypt_str("")) == ""


def test_same_plaintext_gives_different_ciphertexts() -> None:
    ring = KeyRing.from_material(NEW)
    assert ring.encrypt(b"same") != ring.encrypt(b"same")
    assert ring.encrypt_str("same") != ring.encrypt_str("same")


def test_kid_is_stable_short_and_reveals_no_key() -> None:
    a, b = KeyRing.from_material(NEW), KeyRing.from_material(NEW)
    assert a.current.kid == b.current.kid
    assert len(a.current.kid) == 12
    assert a.current.kid != KeyRing.from_material(OLD).current.kid
    assert a.current.kid not in NEW and NEW not in repr(a) and NEW not in repr(a.current)


def test_rotation_previous_keys_decrypt_and_new_data_uses_the_current_key() -> None:
    old_ring = KeyRing.from_settings(Settings(encryption_key=OLD))
    old_token, old_blob = old_ring.encrypt_str("legacy"), old_ring.encrypt(b"legacy")

    rotated = KeyRing.from_settings(
        Settings(encryption_key=NEW, encryption_keys_previous=f" {OTHER} , {OLD},")
    )
    other_kid = KeyRing.from_material(OTHER).current.kid
    assert rotated.kids == [rotated.current.kid, other_kid, old_ring.current.kid]
    assert rotated.decrypt_str(old_token) == "legacy"
    assert rotated.decrypt(old_blob) == b"legacy"
    fresh = rotated.encrypt_str("fresh")
    assert fresh.split(":")[2] == rotated.current.kid != old_ring.current.kid
    with pytest.raises(DecryptionError):  # the old ring cannot read data under the new key
        old_ring.decrypt_str(fresh)


def test_unknown_key_names_the_kid_never_the_key() -> None:
    token = KeyRing.from_material(OLD).encrypt_str("x")
    kid = KeyRing.from_material(OLD).current.kid
    ring = KeyRing.from_material(NEW)
    with pytest.raises(DecryptionError) as info:
        ring.decrypt_str(token)
    message = str(info.value)
    assert kid in message and "ENCRYPTION_KEYS_PREVIOUS" in message
    assert OLD not in message and NEW not in message
    assert isinstance(info.value, AppError) and info.value.code == "decryption_failed"
    assert info.value.details == {"kid": kid}


def test_tampering_is_detected() -> None:
    ring = KeyRing.from_material(NEW)
    blob = bytearray(ring.encrypt(b"amount=10"))
    for index in (len(blob) - 1, 8, 20):  # tag, nonce, ciphertext
        forged = bytearray(blob)
        forged[index] ^= 0x01
        with pytest.raises(DecryptionError, match=f"key id {ring.current.kid}: authentication"):
            ring.decrypt(bytes(forged))
    with pytest.raises(DecryptionError, match="authentication failed"):
        ring.decrypt(bytes(blob), aad=b"another purpose")
    with pytest.raises(DecryptionError, match="authentication failed"):
        ring.decrypt(bytes(blob[:-1]))

    token = ring.encrypt_str("amount=10")
    prefix, body = token.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 0x01
    forged_token = f"{prefix}:{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
    with pytest.raises(DecryptionError, match="authentication failed"):
        ring.decrypt_str(forged_token)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("plain text", "not an encrypted value"),
        ("enc:v1:nothex:abc", "malformed"),
        ("enc:v1:0123456789ab", "malformed"),
        ("enc:v1:0123456789ab:!!!", "malformed"),
        ("enc:v1:0123456789ab:", "too short"),
    ],
)
def test_malformed_text_is_a_clear_error(value: str, needle: str) -> None:
    with pytest.raises(DecryptionError, match=needle):
        KeyRing.from_material(NEW).decrypt_str(value)


def test_unknown_binary_version() -> None:
    ring = KeyRing.from_material(NEW)
    blob = ring.encrypt(b"x")
    with pytest.raises(DecryptionError, match="unknown format version 2"):
        ring.decrypt(b"\x02" + blob[1:])


def test_settings_build_the_ring_and_refuse_weak_keys() -> None:
    with pytest.raises(ConfigError, match="^ENCRYPTION_KEY is not set"):
        KeyRing.from_settings(Settings())
    with pytest.raises(ConfigError, match="^ENCRYPTION_KEY is too short: use 32"):
        KeyRing.from_settings(Settings(encryption_key="short"))
    with pytest.raises(ConfigError, match="^ENCRYPTION_KEYS_PREVIOUS entry 2 is too short"):
        KeyRing.from_settings(Settings(encryption_key=NEW, encryption_keys_previous=f"{OLD},x"))
    # Listing the current key among the previous ones is harmless.
    same = Settings(encryption_key=NEW, encryption_keys_previous=NEW)
    assert KeyRing.from_settings(same).kids == [KeyRing.from_material(NEW).current.kid]


def test_previous_keys_are_read_from_the_environment_and_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENCRYPTION_KEYS_PREVIOUS", f"{OLD},{OTHER}")
    settings = Settings(encryption_key=NEW)
    assert settings.encryption_keys_previous == SecretStr(f"{OLD},{OTHER}")
    shown = settings.masked()
    assert shown["ENCRYPTION_KEYS_PREVIOUS"] == MASK and shown["ENCRYPTION_KEY"] == MASK
    assert OLD not in str(shown) and NEW not in str(shown)


def test_connect_options_carry_the_ring_only_with_a_key(topology: Topology) -> None:
    assert connect_options(Settings(), topology).keyring is None
    options = connect_options(Settings(encryption_key=NEW), topology)
    assert options.keyring is not None
    assert options.keyring.current.kid == KeyRing.from_material(NEW).current.kid
    assert NEW not in repr(options)
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY is too short"):
        connect_options(Settings(encryption_key="short"), topology)


# -- the EncryptedText column type on a real SQLite file ----------------------------------------
class Scratch(DeclarativeBase):
    """Its own metadata: nothing here joins core.db.base.Base or the migrations."""


class Credential(Scratch):
    __tablename__ = "credentials"
    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str | None] = mapped_column(EncryptedText(purpose="credentials.token"))
    note: Mapped[str | None] = mapped_column(EncryptedText())


@pytest.fixture
def ring() -> Iterator[KeyRing]:
    ring = KeyRing.from_material(NEW)
    before = install_keyring(ring)
    yield ring
    install_keyring(before)


def test_encrypted_text_round_trips_through_sqlite(tmp_path: Path, ring: KeyRing) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'scratch.db'}")
    Scratch.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            [Credential(id=1, token="xoxb-slack-token", note=None), Credential(id=2, token="")]
        )
        session.commit()
    with Session(engine) as session:
        rows = {c.id: c for c in session.scalars(select(Credential))}
        assert (rows[1].token, rows[1].note, rows[2].token) == ("xoxb-slack-token", None, "")
        # Comparing ciphertexts is meaningless (random nonces): look rows up by key.
        stored = session.execute(text("SELECT token, note FROM credentials WHERE id = 1")).one()
    assert stored.note is None
    assert stored.token.startswith(f"enc:v1:{ring.current.kid}:")
    assert "xoxb" not in stored.token
    # The purpose is authenticated: the same ciphertext in a column of another purpose fails.
    with pytest.raises(DecryptionError, match="authentication failed"):
        ring.decrypt_str(stored.token)
    with engine.begin() as conn:
        conn.execute(text("UPDATE credentials SET note = token WHERE id = 1"))
    with Session(engine) as session, pytest.raises(DecryptionError):
        session.get(Credential, 1)

    # After rotation the old value still reads, and a rewrite uses the new key.
    install_keyring(KeyRing.from_material(OLD, [NEW]))
    with engine.begin() as conn:
        conn.execute(text("UPDATE credentials SET note = NULL WHERE id = 1"))
    with Session(engine) as session:
        credential = session.get(Credential, 1)
        assert credential is not None and credential.token == "xoxb-slack-token"
        credential.token = "xoxb-rotated"
        session.commit()
    with engine.connect() as conn:
        token = conn.execute(text("SELECT token FROM credentials WHERE id = 1")).scalar_one()
    assert token.split(":")[2] == KeyRing.from_material(OLD).current.kid
    engine.dispose()


def test_encrypted_text_without_an_installed_ring_is_a_clear_error(tmp_path: Path) -> None:
    before = install_keyring(None)
    try:
        with pytest.raises(RuntimeError, match="no encryption key ring installed"):
            installed_keyring()
        engine = create_engine(f"sqlite:///{tmp_path / 'scratch.db'}")
        Scratch.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(Credential(id=1, token="x"))
            with pytest.raises(StatementError, match="no encryption key ring installed"):
                session.commit()
        engine.dispose()
    finally:
        install_keyring(before)
