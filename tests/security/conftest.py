"""The security tests use the integration tests' API fixture (the app on each backend)."""

from tests.integration.conftest import api

__all__ = ["api"]
