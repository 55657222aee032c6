"""TOTP multi-factor authentication: enrolment, verification at login, recovery codes.

The TOTP secret is stored encrypted (EncryptedText); recovery codes only as SHA-256 hashes
(each is 48 random bits, used once).
"""

from __future__ import annotations

import secrets

import pyotp
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditService
from core.db.types import utcnow
from core.errors import Conflict, Unauthorized, ValidationFailed
from core.models.identity import MfaRecoveryCode, User
from core.security.tokens import token_hash

ISSUER = "Internal Developer Platform"
RECOVERY_CODES = 10
VALID_WINDOW = 1  # accept the previous and next 30 s step, for clock drift


def _new_recovery_code() -> str:
    raw = secrets.token_hex(6)  # 48 bits, shown as xxxx-xxxx-xxxx
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def _normalise(code: str) -> str:
    return code.strip().lower().replace(" ", "").replace("-", "")


class MfaService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.audit = AuditService(session)

    async def setup(self, user: User) -> str:
        """Start (or restart) enrolment: a new secret, returned as an otpauth:// URI."""
        if user.mfa_enabled:
            raise Conflict("MFA is already on; turn it off first to enrol a new device")
        user.mfa_secret, user.mfa_last_step = pyotp.random_base32(), None
        await self.session.flush()
        await self.audit.record("auth.mfa.setup", "user", user.id)
        return pyotp.TOTP(user.mfa_secret).provisioning_uri(name=user.email, issuer_name=ISSUER)

    async def verify(self, user: User, code: str) -> list[str]:
        """Turn MFA on with a first valid code; returns the recovery codes (shown once)."""
        if user.mfa_enabled:
            raise Conflict("MFA is already on")
        if not user.mfa_secret:
            raise Conflict("start with POST /auth/mfa/setup")
        if not self._accept_totp(user, _normalise(code)):
            raise ValidationFailed(
                "the code does not match; check the device's clock",
                details=[{"field": "code", "message": "does not match"}],
            )
        user.mfa_enabled = True
        codes = await self._replace_recovery_codes(user)
        await self.audit.record("auth.mfa.enable", "user", user.id)
        return codes

    async def disable(self, user: User, code: str) -> None:
        if not user.mfa_enabled:
            raise Conflict("MFA is not on")
        if not await self.check(user, code):
            raise Unauthorized("the MFA code does not match", code="invalid_mfa_code")
        user.mfa_enabled, user.mfa_secret, user.mfa_last_step = False, None, None
        await self.session.execute(
            delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id)
        )
        await self.audit.record("auth.mfa.disable", "user", user.id)

    async def check(self, user: User, code: str) -> bool:
        """A current TOTP code, or an unused recovery code (which is then spent)."""
        code = _normalise(code)
        if user.mfa_secret and self._accept_totp(user, code):
            return True
        recovery = (
            await self.session.scalars(
                select(MfaRecoveryCode).where(
                    MfaRecoveryCode.user_id == user.id,
                    MfaRecoveryCode.code_hash == token_hash(code),
                    MfaRecoveryCode.used_at.is_(None),
                )
            )
        ).first()
        if recovery is None:
            return False
        recovery.used_at = utcnow()
        await self.audit.record("auth.mfa.recovery_code_used", "user", user.id)
        return True

    @staticmethod
    def _accept_totp(user: User, code: str) -> bool:
        """A code of the current step or its neighbours, newer than the last one accepted."""
        assert user.mfa_secret is not None
        if not (code.isascii() and code.isdigit()):  # compare_digest refuses non-ASCII text
            return False
        totp = pyotp.TOTP(user.mfa_secret)
        now = utcnow()
        current = totp.timecode(now)
        for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
            if user.mfa_last_step is not None and step <= user.mfa_last_step:
                continue
            if secrets.compare_digest(totp.generate_otp(step), code):
                user.mfa_last_step = step
                return True
        return False

    async def _replace_recovery_codes(self, user: User) -> list[str]:
        await self.session.execute(
            delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id)
        )
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        self.session.add_all(
            MfaRecoveryCode(user_id=user.id, code_hash=token_hash(_normalise(c))) for c in codes
        )
        await self.session.flush()
        return codes
