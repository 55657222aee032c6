"""Kubeconfigs from users, refused when they would make the worker run or read something.

A kubeconfig's `exec` credential plugin and its `auth-provider` are commands (or code paths
of the client) that run on the machine using it: stored with a provider, they would run on
the provisioning worker, which holds the platform's secrets. File references
(`client-certificate`, `client-key`, `certificate-authority`, `tokenFile`, any `*-file` or
path key) would read the worker's own files. Only inline values are accepted: `*-data`
fields, `token`, `username`/`password`. Parsed within bounds (core.bounded_yaml), checked when
stored and again before each use (rows stored before this check)."""

from __future__ import annotations

from typing import Any

import yaml

from core.bounded_yaml import compose_and_load

# Keys that run something or read a file of the machine using the kubeconfig.
_REFUSED = frozenset(
    {
        "exec",
        "auth-provider",
        "client-certificate",
        "client-key",
        "certificate-authority",
        "tokenFile",
        "token-file",
        "path",
    }
)
_FILE_SUFFIXES = ("-file", "File", "-path", "Path")


def _refused(key: str) -> bool:
    return key in _REFUSED or key.endswith(_FILE_SUFFIXES)


def _find(value: Any, where: str) -> str | None:
    """The path of the first refused key under `value`, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}"
            if isinstance(key, str) and _refused(key):
                return path
            found = _find(item, path)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _find(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def kubeconfig_problem(text: str, field: str = "kubeconfig") -> tuple[str, str] | None:
    """(the field, why) when `text` is not a kubeconfig the platform may use; else None."""
    try:
        _, data = compose_and_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        return field, f"the kubeconfig cannot be read{line}: {problem}"
    if not isinstance(data, dict):
        return field, "the kubeconfig must be a YAML mapping (apiVersion, clusters, users, ...)"
    found = _find(data, field)
    if found is None:
        return None
    key = found.rsplit(".", 1)[-1]
    if key in ("exec", "auth-provider"):
        why = f"`{key}` runs a command on the platform's worker and is not accepted"
    else:
        why = f"`{key}` names a file on the platform's worker and is not accepted"
    return found, f"{why}; give the credentials inline (token, client-certificate-data, ...)"
