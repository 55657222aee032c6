"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from core.models.audit import AuditLog
from core.models.identity import (
    ApiKey,
    MfaRecoveryCode,
    Organization,
    RefreshToken,
    Role,
    Team,
    TeamMembership,
    User,
    UserIdentity,
    UserRole,
)

__all__ = [
    "ApiKey",
    "AuditLog",
    "MfaRecoveryCode",
    "Organization",
    "RefreshToken",
    "Role",
    "Team",
    "TeamMembership",
    "User",
    "UserIdentity",
    "UserRole",
]
