"""Secrets for development: generated once per data directory so tokens survive a restart.

Production mode never reaches this: `Settings` refuses to load without real secrets.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from core.errors import ConfigError
from core.settings import Settings

_FILE = "local-secrets.json"
_GENERATED = ("jwt_secret", "encryption_key")


def _read_or_create(path: Path) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = {name: secrets.token_hex(32) for name in _GENERATED}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            stored: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ConfigError(
                f"{path} is unreadable or not JSON; delete it to generate new development "
                "secrets (tokens issued before become invalid)"
            ) from None
        if all(stored.get(name) for name in _GENERATED):
            return stored
        stored = {**fresh, **{k: v for k, v in stored.items() if v}}
        path.write_text(json.dumps(stored))
        return stored
    with os.fdopen(fd, "w") as fh:
        json.dump(fresh, fh)
    return fresh


def local_secrets_path(settings: Settings) -> Path:
    return settings.resolved_data_dir / _FILE


def with_local_secrets(settings: Settings) -> Settings:
    """Fill unset secrets from `<data dir>/local-secrets.json` (created 0600 on first use)."""
    missing = [name for name in _GENERATED if getattr(settings, name) is None]
    if settings.env == "production" or not missing:
        return settings
    stored = _read_or_create(local_secrets_path(settings))
    return settings.model_copy(update={name: SecretStr(stored[name]) for name in missing})
