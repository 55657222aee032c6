"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from core.models.audit import AuditLog
from core.models.identity import (
    ApiKey,
    Organization,
    RefreshToken,
    Role,
    Team,
    TeamMembership,
    User,
    UserRole,
)

__all__ = [
    "ApiKey",
    "AuditLog",
    "Organization",
    "RefreshToken",
    "Role",
    "Team",
    "TeamMembership",
    "User",
    "UserRole",
]
