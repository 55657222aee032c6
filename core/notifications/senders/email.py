"""Email delivery over SMTP with the standard library (smtplib in a worker thread)."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal

from core.notifications.senders.errors import DeliveryError, SendResult, redact
from core.security.egress import EgressPolicy, EgressRefused

Security = Literal["none", "starttls", "tls"]

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII without ":" (RFC 5322 field-name)
_LOCAL_PART = re.compile(r"^[^\s@<>()\[\],;:\\\"]{1,64}$")
_DOMAIN_LABEL = re.compile(r"^(?!-)[^\W_](?:[\w-]{0,61}[^\W_])?$")
# Headers the sender builds itself; callers' `headers` may not replace them.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach and log in to an SMTP server. `security`: "tls" is implicit TLS (usually
    port 465), "starttls" upgrades a plain connection (usually 587), "none" sends in clear."""

    host: str
    port: int
    security: Security
    username: str | None
    password: str | None = field(repr=False)
    from_address: str
    timeout: float = 15


async def send_email(
    smtp: SmtpSettings,
    *,
    to: list[str],
    subject: str,
    text: str,
    html: str | None,
    message_id_domain: str | None = None,
    headers: dict[str, str] | None = None,
    egress: EgressPolicy | None = None,
) -> SendResult:
    """Send one message (text, plus an HTML alternative when given) to `to`.

    Returns the Message-ID as remote_id. Invalid addresses are refused before connecting.
    Recipients the server refused while accepting others are listed in details["refused"].
    The SMTP host is a user's: the connection goes to the address the egress guard `egress`
    vetted (default: no loopback, link-local or private address), TLS verifying the name.
    """
    if smtp.security not in ("none", "starttls", "tls"):
        raise DeliveryError(
            f"unknown SMTP security setting {smtp.security!r} (use none, starttls or tls)",
            retryable=False,
        )
    _, sender = _check_address(smtp.from_address, role="sender")
    if not to:
        raise DeliveryError("the email has no recipient", retryable=False)
    recipients = [_check_address(value, role="recipient") for value in to]

    message = EmailMessage()
    message["Subject"] = _one_line(subject)
    message["From"] = smtp.from_address.strip()
    message["To"] = ", ".join(formatted for formatted, _ in recipients)
    message["Date"] = formatdate(usegmt=True)
    message_id = make_msgid(domain=message_id_domain or sender.rsplit("@", 1)[1])
    message["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            raise DeliveryError(f"the email header {name!r} may not be set", retryable=False)
        del message[name]
        message[name] = _one_line(value)
    message.set_content(text, cte="quoted-printable")
    if html is not None:
        message.add_alternative(html, subtype="html", cte="quoted-printable")

    addresses = [address for _, address in recipients]
    try:
        pinned = await (egress or EgressPolicy()).connect_address(smtp.host, smtp.timeout)
        refused = await asyncio.to_thread(_deliver, smtp, message, sender, addresses, pinned)
    except EgressRefused as exc:
        # Permanent until the channel's host or the operator's allow-list changes.
        raise DeliveryError(f"the SMTP host was refused: {exc}", retryable=False) from None
    except DeliveryError:
        raise
    except Exception as exc:
        error = _classify(exc, smtp)
        if error is None:
            raise
        raise error from None
    details = {"message_id": message_id}
    if refused:
        details["refused"] = "; ".join(
            _refusal(address, code, text) for address, (code, text) in refused.items()
        )
    return SendResult(remote_id=message_id, details=details)


class _PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP connecting to `address` (vetted by the egress guard) while naming `host`:
    the name is not resolved again, and STARTTLS verifies the certificate for the name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self._address = address
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's hook for making the socket; `host` is the name, never resolved here.
        return socket.create_connection((self._address, port), timeout, self.source_address)


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL, pinned like `_PinnedSMTP` (TLS's server name stays `host`)."""

    def __init__(
        self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        self._address = address
        super().__init__(host, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((self._address, port), timeout, self.source_address)
        return self.context.wrap_socket(raw, server_hostname=host)


def _deliver(
    smtp: SmtpSettings,
    message: EmailMessage,
    sender: str,
    recipients: list[str],
    address: str,
) -> dict[str, tuple[int, bytes]]:
    context = ssl.create_default_context()
    connection: smtplib.SMTP
    if smtp.security == "tls":
        connection = _PinnedSMTPSSL(smtp.host, smtp.port, address, smtp.timeout, context)
    else:
        connection = _PinnedSMTP(smtp.host, smtp.port, address, smtp.timeout)
    with connection:
        connection.ehlo()
        if smtp.security == "starttls":
            if not connection.has_extn("starttls"):
                raise DeliveryError(
                    f"the SMTP server {smtp.host}:{smtp.port} does not offer STARTTLS; "
                    "check the port, or set security to tls (implicit TLS, usually port 465)",
                    retryable=False,
                )
            connection.starttls(context=context)
            connection.ehlo()
        if smtp.username:
            if not connection.has_extn("auth"):
                raise DeliveryError(
                    f"the SMTP server {smtp.host}:{smtp.port} does not offer authentication "
                    "(AUTH) on this connection; use starttls or tls, or remove the username",
                    retryable=False,
                )
            connection.login(smtp.username, smtp.password or "")
        return connection.send_message(message, from_addr=sender, to_addrs=recipients)


def _check_address(value: str, *, role: str) -> tuple[str, str]:
    """(the value as it goes into the header, the bare address) or a permanent DeliveryError."""
    shown = value.strip()[:200]
    invalid = DeliveryError(f"invalid {role} address: {shown!r}", retryable=False)
    if not value.strip() or "\r" in value or "\n" in value or value.count("@") != 1:
        raise invalid
    _, address = parseaddr(value)
    if not address or address not in value:
        raise invalid
    local, _, domain = address.rpartition("@")
    labels = domain.split(".")
    if (
        not _LOCAL_PART.match(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or len(domain) > 253
        or len(labels) < 2
        or not all(_DOMAIN_LABEL.match(label) for label in labels)
    ):
        raise invalid
    return value.strip(), address


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _server_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:300]


def _refusal(address: str, code: int, text: bytes | str) -> str:
    return f"{address}: {code} {_server_text(text)}".rstrip()


def _is_transient(code: int) -> bool:
    return 400 <= code < 500


def _classify(exc: Exception, smtp: SmtpSettings) -> DeliveryError | None:
    where = f"{smtp.host}:{smtp.port}"
    secrets = (smtp.password,)

    def error(reason: str, *, retryable: bool, status: int | None = None) -> DeliveryError:
        return DeliveryError(redact(reason, *secrets), retryable=retryable, status=status)

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = exc.recipients or {}
        codes = [code for code, _ in refused.values()]
        reasons = "; ".join(_refusal(a, code, text) for a, (code, text) in refused.items())
        return error(
            f"recipient refused: {reasons}",
            retryable=bool(codes) and all(_is_transient(code) for code in codes),
            status=codes[0] if codes else None,
        )
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return error(
            f"sender refused: {_refusal(str(exc.sender), exc.smtp_code, exc.smtp_error)}",
            retryable=_is_transient(exc.smtp_code),
            status=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # The server's text is left out: some servers echo the credentials back.
        if _is_transient(exc.smtp_code):
            return error(
                f"SMTP authentication failed temporarily ({exc.smtp_code})",
                retryable=True,
                status=exc.smtp_code,
            )
        return error(
            f"SMTP authentication failed ({exc.smtp_code}); "
            "check the email channel's username and password",
            retryable=False,
            status=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPConnectError):
        return error(
            f"the SMTP server {where} refused the session: "
            f"{exc.smtp_code} {_server_text(exc.smtp_error)}",
            retryable=True,
            status=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return error(
            f"the SMTP server {where} closed the connection: {exc or 'no reason given'}",
            retryable=True,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return error(
            f"the SMTP server {where} answered {exc.smtp_code} {_server_text(exc.smtp_error)}",
            retryable=_is_transient(exc.smtp_code),
            status=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPException):  # SMTPNotSupportedError, no usable AUTH method…
        return error(f"SMTP error with {where}: {exc}", retryable=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return error(
            f"the TLS certificate of the SMTP server {where} could not be verified: "
            f"{exc.verify_message or exc.reason}",
            retryable=False,
        )
    if isinstance(exc, ssl.SSLError):
        return error(
            f"TLS with the SMTP server {where} failed ({exc.reason or exc}); check the port and "
            "the security setting (tls: implicit TLS, usually 465; starttls: usually 587)",
            retryable=False,
        )
    if isinstance(exc, socket.gaierror):
        return error(f"the SMTP server name {smtp.host!r} could not be resolved", retryable=True)
    if isinstance(exc, TimeoutError):
        return error(
            f"the SMTP server {where} did not answer within {smtp.timeout:g}s", retryable=True
        )
    if isinstance(exc, ConnectionRefusedError):
        return error(f"the SMTP server {where} refused the connection", retryable=True)
    if isinstance(exc, OSError):
        return error(
            f"the SMTP server {where} could not be reached: {exc.strerror or exc}",
            retryable=True,
        )
    return None
