"""Access tokens (JWT), refresh tokens and API keys.

Access tokens are short-lived HS256 JWTs that carry only who the user is; permissions are read
per request, so a revoked role takes effect at once. Refresh tokens and API keys are opaque
random strings with a recognisable prefix; only their SHA-256 hashes are stored (they carry
256 bits of randomness, so a slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from core.db.types import utcnow
from core.errors import Unauthorized

ISSUER = "idp"
ALGORITHM = "HS256"
REFRESH_PREFIX = "idpr_"
API_KEY_PREFIX = "idpk_"


# Token types: "access" is the API's bearer token; "codec" is the browser session the Temporal
# UI presents to the codec endpoints as a cookie. One may never stand in for the other.
ACCESS = "access"
CODEC_SESSION = "codec"
_NAMES = {ACCESS: "access token", CODEC_SESSION: "codec session"}


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    token_id: str
    expires_at: datetime


def issue_access_token(
    secret: str, user_id: uuid.UUID, ttl: timedelta, typ: str = ACCESS
) -> tuple[str, datetime]:
    now = utcnow()
    expires = now + ttl
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": typ,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def decode_access_token(secret: str, token: str, typ: str = ACCESS) -> AccessClaims:
    """Verify signature, issuer, type and expiry; any failure is a 401 saying which."""
    name = _NAMES[typ]
    invalid = Unauthorized(f"{name} is not valid", code="invalid_token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        renew = "refresh it" if typ == ACCESS else "sign in again"
        raise Unauthorized(f"{name} has expired; {renew}", code="token_expired") from None
    except jwt.InvalidTokenError:
        raise invalid from None
    if claims.get("typ") != typ:
        raise invalid
    try:
        user_id = uuid.UUID(claims["sub"])
    except ValueError:
        raise invalid from None
    return AccessClaims(user_id, claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def new_opaque_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
