"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives.

    with SmtpStandin() as smtp:
        await send_email(SmtpSettings(host=smtp.host, ...), ..., egress=local_egress())
        smtp.messages[-1].message["Subject"]

`stop()` then `start()` reopens it on the same port (to play "refuses connections for a
while"); `refuse_recipient(address, code=550)` makes RCPT TO fail for one address; with
`users={"name": "password"}` it offers AUTH (PLAIN, LOGIN) on plain connections and checks them.
It offers no STARTTLS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.helpers import free_port
from tests.standins import LOOPBACK, Running


@dataclass(frozen=True)
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    time: float = field(default_factory=time.time)


class SmtpStandin(Running):
    def __init__(
        self,
        *,
        port: int | None = None,
        users: Mapping[str, str] | None = None,
        hostname: str = "smtp.standin.test",
    ) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self.users = dict(users or {})
        self.hostname = hostname
        self._lock = threading.Lock()
        self._messages: list[ReceivedEmail] = []
        self._refusals: dict[str, tuple[int, str]] = {}
        self._auth_attempts: list[tuple[str, bool]] = []
        self._controller: Controller | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        if self._controller is not None:
            return
        options: dict[str, Any] = {}
        if self.users:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname=self.hostname,
            **options,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Close the listener: connections are refused until start() is called again."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- behaviour and records --------------------------------------------------------------------
    def refuse_recipient(
        self, address: str, code: int = 550, message: str = "5.1.1 Mailbox unavailable"
    ) -> None:
        with self._lock:
            self._refusals[address.lower()] = (code, message)

    @property
    def messages(self) -> list[ReceivedEmail]:
        with self._lock:
            return list(self._messages)

    @property
    def auth_attempts(self) -> list[tuple[str, bool]]:
        """(login, succeeded) for every AUTH attempt."""
        with self._lock:
            return list(self._auth_attempts)

    def _refusal(self, address: str) -> tuple[int, str] | None:
        with self._lock:
            return self._refusals.get(address.lower())

    def _store(self, received: ReceivedEmail) -> None:
        with self._lock:
            self._messages.append(received)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        password = data.password.decode("utf-8", "replace")
        expected = self.users.get(login)
        ok = expected is not None and expected == password
        with self._lock:
            self._auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class _Handler:
    """aiosmtpd handler hooks."""

    def __init__(self, owner: SmtpStandin) -> None:
        self.owner = owner

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.owner._refusal(address)
        if refusal is not None:
            code, message = refusal
            return f"{code} {message}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        self.owner._store(
            ReceivedEmail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=parsed,
                raw=raw,
            )
        )
        return "250 Message accepted for delivery"
