"""SQLAlchemy models. Importing this package registers every table on `Base.metadata`."""

from core.models.audit import AuditLog

__all__ = ["AuditLog"]
