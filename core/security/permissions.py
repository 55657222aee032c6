"""The permission catalogue and the built-in roles (the matrix in docs/security.md)."""

from __future__ import annotations

import uuid

_ROLE_NAMESPACE = uuid.UUID("6f1d2c1e-5b0a-4c57-9a43-0b7f3c2d9e11")

PERMISSIONS: dict[str, str] = {
    "services:read": "See services, versions, dependencies and health",
    "services:write": "Register, change and delete services of a team",
    "pipelines:read": "See pipelines, runs and logs",
    "pipelines:write": "Create, change and delete pipelines",
    "pipelines:run": "Start, re-run and cancel pipeline runs; approve a fork's pull request run",
    "pipelines:secrets": "Set and delete a pipeline's secrets (their values are never shown)",
    "environments:read": "See environments, their configuration and resources",
    "environments:write": "Create environments and change their configuration",
    "environments:deploy": "Deploy and request promotions into an environment",
    "promotions:read": "See promotions and their approvals",
    "promotions:approve": "Approve or reject promotions",
    "infrastructure:read": "See infrastructure resources, costs and compliance",
    "infrastructure:provision": "Provision and destroy infrastructure",
    "infrastructure:approve": "Approve or reject provisioning and destroys that need approval",
    "notifications:read": "See notification channels, templates and deliveries",
    "notifications:write": "Manage channels and templates, send notifications",
    "organizations:read": "See organizations",
    "organizations:write": "Create and change organizations",
    "git_connections:read": "See an organization's Git host connections (never their secrets)",
    "git_connections:write": "Add, rotate and delete Git host connections (they bind repositories)",
    "teams:read": "See teams and their members",
    "teams:write": "Create teams and manage their members",
    "users:read": "See other users' profiles",
    "users:admin": "Create, change, disable and delete users; grant roles",
    "roles:admin": "Create and change custom roles",
    "audit:read": "Read the audit log",
    "workflows:decode": "Read decrypted workflow payloads (Temporal UI codec endpoint)",
}

# Reading the audit log is for admins only.
_READ = [p for p in PERMISSIONS if p.endswith(":read") and p != "audit:read"]

BUILTIN_ROLES: dict[str, tuple[str, list[str]]] = {
    "admin": ("Everything, everywhere", list(PERMISSIONS)),
    "maintainer": (
        "Runs a team's services end to end, including deploys and infrastructure",
        [
            *_READ,
            "services:write",
            "pipelines:write",
            "pipelines:run",
            "pipelines:secrets",
            "environments:write",
            "environments:deploy",
            "infrastructure:provision",
            "notifications:write",
            "teams:write",
            "git_connections:write",
        ],
    ),
    "developer": (
        "Builds and ships: services, pipelines, deploys to non-protected environments",
        [*_READ, "services:write", "pipelines:write", "pipelines:run", "environments:deploy"],
    ),
    "viewer": ("Reads everything it can see, changes nothing", _READ),
    "approver": (
        "Reads, and approves or rejects promotions and provisioning",
        [*_READ, "promotions:approve", "infrastructure:approve"],
    ),
}
# Team membership roles grant a built-in role scoped to that team.
MEMBERSHIP_ROLES: dict[str, str] = {
    "owner": "maintainer",
    "maintainer": "maintainer",
    "member": "developer",
}


def unknown_permissions(permissions: list[str]) -> list[str]:
    return [p for p in permissions if p not in PERMISSIONS]


def builtin_role_id(name: str) -> uuid.UUID:
    """The fixed id of a built-in role's row (the same in every installation)."""
    return uuid.uuid5(_ROLE_NAMESPACE, name)


def matrix_markdown() -> str:
    """The permission matrix as a Markdown table (kept in docs/security.md; a test compares)."""
    roles = list(BUILTIN_ROLES)
    lines = [
        "| permission | " + " | ".join(roles) + " | meaning |",
        "| --- | " + " | ".join(":-:" for _ in roles) + " | --- |",
    ]
    for permission, meaning in PERMISSIONS.items():
        marks = " | ".join("✓" if permission in BUILTIN_ROLES[r][1] else "" for r in roles)
        lines.append(f"| `{permission}` | {marks} | {meaning} |")
    return "\n".join(lines)
