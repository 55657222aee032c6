"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from core.models.audit import AuditLog
from core.models.catalog import (
    HealthCheck,
    HealthCheckResult,
    HealthTransition,
    Service,
    ServiceDependency,
    ServiceTag,
    ServiceVersion,
)
from core.models.environments import Environment, EnvironmentAccess, EnvironmentConfig
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
from core.models.infrastructure import (
    Budget,
    CostRecord,
    Provider,
    Resource,
    ResourceRelationship,
)
from core.models.notifications import (
    Notification,
    NotificationAttempt,
    NotificationChannel,
    NotificationTemplate,
    UserNotificationPreference,
)
from core.models.pipelines import (
    BuildArtifact,
    Pipeline,
    PipelineLogChunk,
    PipelineRun,
    PipelineStage,
    PipelineStep,
)
from core.models.promotions import Promotion, ServiceDeployment
from core.models.provisioning import Provision, ProvisionLogChunk

__all__ = [
    "ApiKey",
    "AuditLog",
    "Budget",
    "BuildArtifact",
    "CostRecord",
    "Environment",
    "EnvironmentAccess",
    "EnvironmentConfig",
    "HealthCheck",
    "HealthCheckResult",
    "HealthTransition",
    "MfaRecoveryCode",
    "Notification",
    "NotificationAttempt",
    "NotificationChannel",
    "NotificationTemplate",
    "Organization",
    "Pipeline",
    "PipelineLogChunk",
    "PipelineRun",
    "PipelineStage",
    "PipelineStep",
    "Promotion",
    "Provider",
    "Provision",
    "ProvisionLogChunk",
    "RefreshToken",
    "Resource",
    "ResourceRelationship",
    "Role",
    "Service",
    "ServiceDependency",
    "ServiceDeployment",
    "ServiceTag",
    "ServiceVersion",
    "Team",
    "TeamMembership",
    "User",
    "UserIdentity",
    "UserNotificationPreference",
    "UserRole",
]
