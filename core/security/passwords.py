"""Password hashing with argon2id, and the password policy."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.errors import ValidationFailed

MIN_LENGTH = 12
MAX_LENGTH = 256

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verifying against this keeps the time of a login for an unknown email the same as a real one.
_DUMMY_HASH = _hasher.hash("dummy password for constant-time failures")


def hash_password(password: str) -> str:
    check_policy(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; always spends the same time, even without a hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def check_policy(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ValidationFailed(
            f"password must be {MIN_LENGTH} to {MAX_LENGTH} characters long",
            details=[{"field": "password", "message": "length"}],
        )
    if password.strip() != password or len(set(password)) < 4:
        raise ValidationFailed(
            "password is too simple: avoid leading/trailing spaces and repeated characters",
            details=[{"field": "password", "message": "too simple"}],
        )
