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
from core.models.environments import (
    Environment,
    EnvironmentAccess,
    EnvironmentConfig,
    KubernetesContext,
)
from core.models.git_hosts import GitHostConnection, RepositoryBinding
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
    PipelineSecret,
    PipelineStage,
    PipelineStep,
)
from core.models.promotions import Promotion, ServiceDeployment
from core.models.provisioning import Provision, ProvisionLogChunk
from core.models.slack import SlackLink, SlackLinkChallenge

__all__ = [
    "ApiKey",
    "AuditLog",
    "Budget",
    "BuildArtifact",
    "CostRecord",
    "Environment",
    "EnvironmentAccess",
    "EnvironmentConfig",
    "GitHostConnection",
    "HealthCheck",
    "HealthCheckResult",
    "HealthTransition",
    "KubernetesContext",
    "MfaRecoveryCode",
    "Notification",
    "NotificationAttempt",
    "NotificationChannel",
    "NotificationTemplate",
    "Organization",
    "Pipeline",
    "PipelineLogChunk",
    "PipelineRun",
    "PipelineSecret",
    "PipelineStage",
    "PipelineStep",
    "Promotion",
    "Provider",
    "Provision",
    "ProvisionLogChunk",
    "RefreshToken",
    "RepositoryBinding",
    "Resource",
    "ResourceRelationship",
    "Role",
    "Service",
    "ServiceDependency",
    "ServiceDeployment",
    "ServiceTag",
    "ServiceVersion",
    "SlackLink",
    "SlackLinkChallenge",
    "Team",
    "TeamMembership",
    "User",
    "UserIdentity",
    "UserNotificationPreference",
    "UserRole",
]
