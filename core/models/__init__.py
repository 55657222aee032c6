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
from core.models.notifications import (
    Notification,
    NotificationAttempt,
    NotificationChannel,
    NotificationTemplate,
    UserNotificationPreference,
)

__all__ = [
    "ApiKey",
    "AuditLog",
    "MfaRecoveryCode",
    "Notification",
    "NotificationAttempt",
    "NotificationChannel",
    "NotificationTemplate",
    "Organization",
    "RefreshToken",
    "Role",
    "Team",
    "TeamMembership",
    "User",
    "UserIdentity",
    "UserNotificationPreference",
    "UserRole",
]
